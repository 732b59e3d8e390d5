"""Operator actions on a projection: Parquet export and a DuckDB snapshot, local or through the replica.

A DuckDB file has one writer. When no projector holds it, the command opens the file itself; when one
does (for instance inside `swarm up`), it asks that replica over NATS (`swarmadm.projectors.<action>`),
which writes the files on its own machine.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Literal

import duckdb
import msgspec

import bus
from projectors.export import export_parquet, snapshot
from projectors.rebuild import Drift, check, rebuild
from projectors.store import Store, open_store

ROOT = "swarmadm.projectors"
Action = Literal["export", "snapshot"]


class AdminError(Exception):
    """An export or snapshot that could not be made; the message says why."""


class _Ask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str


class _Answer(msgspec.Struct, frozen=True):
    files: list[str] = []
    error: str | None = None


def _run(action: Action, store: Store, path: Path) -> list[Path]:
    if action == "export":
        return export_parquet(store, path)
    return [snapshot(store, path)]


def endpoints(conn: bus.Connection, store: Store) -> dict[str, tuple[str, bus.Responder]]:
    """The replica side: export and snapshot answer with the files written, check with the drift."""

    async def drift(_: str, body: bytes) -> bytes:
        with contextlib.closing(store.cursor()) as live:
            found = await check(conn, live, workdir=store.path.parent if store.path else None)
        return msgspec.json.encode(found)

    def handler(action: Action) -> bus.Responder:
        async def respond(_: str, body: bytes) -> bytes:
            try:
                path = Path(msgspec.json.decode(body, type=_Ask).path)
                files = await asyncio.to_thread(_run, action, store, path)
            except (msgspec.MsgspecError, OSError, duckdb.Error) as exc:
                return msgspec.json.encode(_Answer(error=f"{action} failed: {exc}"))
            return msgspec.json.encode(_Answer(files=[str(f) for f in files]))

        return respond

    actions: dict[str, bus.Responder] = {"export": handler("export"), "snapshot": handler("snapshot")}
    return {
        f"admin_{name}": (f"{ROOT}.{name}", respond) for name, respond in (actions | {"check": drift}).items()
    }


async def perform(action: Action, settings: bus.Settings, database: Path, path: Path) -> list[Path]:
    """Export or snapshot `database` to `path`, directly if the file is free, else through its replica."""
    path = path.resolve()
    try:
        return await asyncio.to_thread(_locally, action, database, path)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise AdminError(f"cannot open {database}: {exc}") from exc
    return await _remotely(action, settings, path)


def _locally(action: Action, database: Path, path: Path) -> list[Path]:
    if not database.exists():
        raise AdminError(f"no projection at {database}: start a projector (or `swarm up`) first")
    with open_store(database) as store:
        return _run(action, store, path)


async def _remotely(action: Action, settings: bus.Settings, path: Path) -> list[Path]:
    async with bus.connect(settings, name="swarm-admin") as conn:
        try:
            ask = msgspec.json.encode(_Ask(path=str(path)))
            raw = await bus.request(conn, f"{ROOT}.{action}", ask, within=120)
        except bus.RequestFailed as exc:
            raise AdminError(f"the projection is in use and its projector did not answer: {exc}") from exc
    answer = msgspec.json.decode(raw, type=_Answer)
    if answer.error:
        raise AdminError(answer.error)
    return [Path(file) for file in answer.files]


async def rebuild_file(settings: bus.Settings, database: Path, *, workers: int = 1) -> int:
    """Rebuild `database` from sequence 1 and swap it in; its projector must be stopped."""
    await asyncio.to_thread(_ensure_free, database)
    async with bus.connect(settings, name="swarm-rebuild") as conn:
        return await rebuild(conn, database, workers=workers)


async def check_file(settings: bus.Settings, database: Path, *, workers: int = 1) -> Drift:
    """Compare `database` with a rebuild at the same sequence (drift check), through its replica if busy."""
    if not database.exists():
        raise AdminError(f"no projection at {database}")
    async with bus.connect(settings, name="swarm-check") as conn:
        try:
            live = duckdb.connect(str(database), read_only=True)
        except duckdb.IOException:
            try:
                raw = await bus.request(conn, f"{ROOT}.check", b"{}", within=300)
            except bus.RequestFailed as exc:
                raise AdminError(f"{database} is in use and its projector did not answer: {exc}") from exc
            return msgspec.json.decode(raw, type=Drift)
        with contextlib.closing(live):
            return await check(conn, live, workdir=database.parent, workers=workers)


def _ensure_free(database: Path) -> None:
    if not database.exists():
        return
    try:
        duckdb.connect(str(database)).close()
    except duckdb.IOException as exc:
        raise AdminError(f"{database} is in use: stop its projector first ({exc})") from exc
