"""Driving the executor the way clients do: commands on the log, events read back from it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import bus
from executors.executor import Executor
from executors.registry import Registry
from executors.role import executor as executor_of
from executors.sandbox import Backend
from executors.settings import Settings, Upstream
from schemas import (
    AnyEvent,
    CancelRun,
    CreateProject,
    IdSource,
    Kind,
    LocalSource,
    RunLimits,
    StartRun,
    chain,
    decode_event,
    subjects,
)
from schemas.run import TerminalEvents

TENANT = "acme"
ACTOR = "key_tester"
ids = IdSource()


@dataclass
class Arrived:
    """The events of one run with the local time each was read, to check they streamed live."""

    events: list[AnyEvent] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    records: list[bus.Record] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, kind: type) -> list[AnyEvent]:
        return [event for event in self.events if isinstance(event, kind)]

    @property
    def terminal(self) -> AnyEvent:
        return self.events[-1]

    def types(self) -> list[str]:
        return [event.type for event in self.events]


def settings_for(tmp_path: Path, upstream: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "work_dir": str(tmp_path / "executor"),
        "ack_wait": 3.0,
        "cancel_grace": 3.0,
        "shutdown_grace": 2.0,
        "upstream": Upstream(base_url=upstream),
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


@asynccontextmanager
async def running(conn: bus.Connection, settings: Settings, backend: Backend) -> AsyncIterator[Executor]:
    """An executor and a registry replica serving until the block ends."""
    registry = Registry(conn)
    async with executor_of(conn, settings, backend) as replica, asyncio.TaskGroup() as tasks:
        tasks.create_task(replica.run())
        tasks.create_task(registry.run())
        await replica.wait_ready()
        try:
            yield replica
        finally:
            await registry.shutdown(1.0)
            await replica.shutdown(settings.shutdown_grace)


async def create_project(conn: bus.Connection, path: Path, project_id: str | None = None) -> str:
    project_id = project_id or ids.new(Kind.PROJECT)
    command = CreateProject(
        id=ids.new(Kind.COMMAND),
        at=datetime.now(UTC),
        tenant=TENANT,
        actor=ACTOR,
        project_id=project_id,
        name="demo",
        source=LocalSource(path=str(path)),
    )
    await conn.log.send(command)
    return project_id


def sample_project(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "README.md").write_text("# sample\n")
    (root / "src" / "main.py").write_text("print('sample')\n")
    return root


async def start_run(
    conn: bus.Connection, project_id: str, instructions: str, limits: RunLimits | None = None, **extra: object
) -> StartRun:
    command = StartRun(
        id=ids.new(Kind.COMMAND),
        at=datetime.now(UTC),
        tenant=TENANT,
        actor=ACTOR,
        run_id=ids.new(Kind.RUN),
        project_id=project_id,
        instructions=instructions,
        limits=limits or RunLimits(),
        **extra,  # type: ignore[arg-type]
    )
    await conn.log.send(command)
    return command


async def cancel_run(conn: bus.Connection, run_id: str, reason: str = "test") -> CancelRun:
    command = CancelRun(
        id=ids.new(Kind.COMMAND),
        at=datetime.now(UTC),
        tenant=TENANT,
        actor=ACTOR,
        run_id=run_id,
        reason=reason,
    )
    await conn.log.send(command)
    return command


async def follow_run(conn: bus.Connection, run_id: str, arrived: Arrived, within: float = 60.0) -> Arrived:
    """Collect the run's events as they arrive, until its terminal event (or fail after `within`)."""
    subject = subjects.events(TENANT, "run", run_id)
    async with asyncio.timeout(within):
        async for record in conn.log.follow(subject):
            event = decode_event(record.data)
            arrived.events.append(event)
            arrived.times.append(time.monotonic())
            arrived.records.append(record)
            arrived.changed.set()
            if isinstance(event, TerminalEvents):
                return arrived
    raise AssertionError("the run's events ended without a terminal event")


async def wait_for(arrived: Arrived, kind: type, within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not arrived.of(kind):
            arrived.changed.clear()
            await arrived.changed.wait()


def verify_chain(arrived: Arrived) -> chain.Report:
    return chain.verify(record.entry() for record in arrived.records)
