"""Rebuilding a projection from the start of the log, and proving it equals the live one.

`rebuild` folds the log from sequence 1 into a fresh DuckDB file beside the target and moves it over the
target with one `os.replace`, so the target path always opens as a whole database, old or new.
`checksums` gives each table a row count and an order-independent digest of every value in it;
`compare` and `check` report the tables whose checksums differ at the same log sequence (DESIGN.md,
"Projectors": a rebuild from sequence 1 gives exactly the live tables).

Digests are sums of DuckDB's 64-bit `hash` of each whole row: independent of row order and storage
layout, sensitive to every column including NULLs and microseconds, and a single scan (about 30 ms per
million rows). `hash` is only stable within one DuckDB version, so compare digests computed by the same
build, as `check` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

import duckdb
import msgspec

import bus
from projectors.errors import ProjectorError
from projectors.partition import RebuildFailed, fold_in_parallel
from projectors.prices import Prices
from projectors.prices import load as load_prices
from projectors.rows import TABLES
from projectors.settings import MAX_BATCH
from projectors.store import Store, open_store

CHECKED = (*(table.TABLE for table in TABLES), "skipped", "checkpoint")
"""The tables a drift check covers: every read model plus the bookkeeping that must agree with them."""


class TableChecksum(msgspec.Struct, frozen=True):
    rows: int
    digest: str


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A projection's checksums and the log sequence they reflect, read in one transaction."""

    seq: int
    tables: dict[str, TableChecksum]


class TableDrift(msgspec.Struct, frozen=True, kw_only=True):
    table: str
    live: TableChecksum | None
    rebuilt: TableChecksum | None


class Drift(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a comparison at sequence `seq`; no drift when `tables_differing` is empty."""

    seq: int
    tables_differing: list[TableDrift]

    @property
    def clean(self) -> bool:
        return not self.tables_differing


class NotComparable(ProjectorError):
    """The two projections reflect different log sequences, so their tables need not agree."""

    def __init__(self, live_seq: int, rebuilt_seq: int) -> None:
        super().__init__(f"live projection is at sequence {live_seq}, the rebuilt one at {rebuilt_seq}")
        self.live_seq = live_seq
        self.rebuilt_seq = rebuilt_seq


async def rebuild(
    conn: bus.Connection,
    target: Path,
    *,
    until_seq: int | None = None,
    prices: Prices | None = None,
    max_batch: int = MAX_BATCH,
    workers: int = 1,
) -> int:
    """Fold the log from sequence 1 (through `until_seq`, if given) into a fresh file and swap it in.

    The file is built at `<target>.rebuild`, checkpointed, closed and only then renamed over `target`;
    on any error or cancellation `target` is left as it was and the partial file removed. Returns the
    last applied sequence: `until_seq`, or less if the log ends first (0 for an empty log). Nothing
    may hold `target` open for writing meanwhile: stop its projector first and restart it on the new
    file. With `workers` > 1 the runs are folded by that many processes at once
    (`projectors.partition`) and their files merged.
    """
    scratch = target.with_name(f"{target.name}.rebuild")
    _remove(scratch)
    try:
        if workers > 1:
            last = await _in_parallel(conn, scratch, until_seq, prices or load_prices(), max_batch, workers)
        else:
            with open_store(scratch, prices) as store:
                last = await replay(conn, store, until_seq, max_batch)
                store.connection.execute("CHECKPOINT")  # everything in the main file: no WAL to move
        # A WAL left by a killed writer of the old file would be replayed onto the new one.
        _wal(target).unlink(missing_ok=True)
        os.replace(scratch, target)
    except BaseException:
        _remove(scratch)
        raise
    _sync_directory(target.parent)
    return last


async def _in_parallel(
    conn: bus.Connection, scratch: Path, until_seq: int | None, prices: Prices, max_batch: int, workers: int
) -> int:
    # Every worker stops at the same sequence: the log's end now, or `until_seq` if that comes first.
    end = await conn.log.end()
    end = end if until_seq is None else min(until_seq, end)
    parts = [scratch.with_name(f"{scratch.name}.{index}") for index in range(workers)]
    try:
        if end > 0:
            await fold_in_parallel(conn, parts, end, prices, max_batch)
        with open_store(scratch, prices) as store:
            if end > 0:
                await asyncio.to_thread(_merge, store, parts, end)
            store.connection.execute("CHECKPOINT")
            return store.last_seq
    finally:
        for part in parts:
            _remove(part)


async def replay(conn: bus.Connection, store: Store, until_seq: int | None, max_batch: int) -> int:
    """Apply the log through `until_seq` (or its current end) to `store`; the last sequence applied."""
    last = until_seq if until_seq is not None else float("inf")
    if last <= 0:
        return 0
    # Read in a child process, as the live projector does: this one folds and writes meanwhile.
    batches = conn.log.batches(max_batch=max_batch, follow=False, in_child=True)
    try:
        async for batch in batches:
            done = batch[-1].seq >= last
            await _apply(store, [record for record in batch if record.seq <= last] if done else batch)
            if done:
                break
    finally:
        await batches.aclose()
    return store.last_seq


async def _apply(store: Store, records: list[bus.Record]) -> None:
    """Apply in a worker thread (DuckDB blocks; the next batch streams in meanwhile).

    A cancellation waits for the thread to finish its batch, so the file is never closed under it.
    """
    applying = asyncio.ensure_future(asyncio.to_thread(store.apply, records))
    try:
        await asyncio.shield(applying)
    except asyncio.CancelledError:
        await asyncio.wait({applying})
        raise


def _merge(store: Store, parts: list[Path], end: int) -> None:
    """Copy every partition's rows into `store`, in one transaction; the counts add up."""
    con = store.connection
    names = [f"part{index}" for index in range(len(parts))]
    for name, part in zip(names, parts, strict=True):
        con.execute(f"ATTACH '{_quoted(part)}' AS {name} (READ_ONLY)")

    def union(table: str) -> str:  # every name here is ours: partN and the read-model tables
        return " UNION ALL ".join(f"SELECT * FROM {name}.{table}" for name in names)  # noqa: S608

    try:
        ended = con.execute(f"SELECT DISTINCT last_seq FROM ({union('checkpoint')})").fetchall()  # noqa: S608
        if ended != [(end,)]:
            raise RebuildFailed(-1, 0, f"the partitions ended at {sorted(e[0] for e in ended)}, not {end}")
        con.execute("BEGIN TRANSACTION")
        try:
            for table in TABLES:
                con.execute(f"INSERT INTO {table.TABLE} {union(table.TABLE)}")
            con.execute(
                "INSERT INTO skipped SELECT type, sum(count), max(last_seq) "  # noqa: S608
                f"FROM ({union('skipped')}) GROUP BY type"
            )
            con.execute(
                "UPDATE checkpoint SET last_seq = $end, events = totals.events, skipped = totals.skipped "  # noqa: S608
                f"FROM (SELECT sum(events) AS events, sum(skipped) AS skipped FROM ({union('checkpoint')})) "
                "AS totals WHERE id = 1",
                {"end": end},
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")  # so the partitions detach and the merge's own error is what surfaces
            raise
    finally:
        for name in names:
            con.execute(f"DETACH {name}")


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def checksums(connection: duckdb.DuckDBPyConnection) -> dict[str, TableChecksum]:
    """Each checked table's row count and the sum of its rows' hashes (as hex), in one scan per table."""
    sums = {}
    for table in CHECKED:
        row = connection.execute(
            f"SELECT count(*), coalesce(sum(hash(_row)), 0) FROM {table} AS _row"  # noqa: S608 - names are ours
        ).fetchone()
        assert row is not None
        sums[table] = TableChecksum(rows=int(row[0]), digest=f"{int(row[1]):x}")
    return sums


def snapshot(connection: duckdb.DuckDBPyConnection) -> Snapshot:
    """The checkpoint sequence and every checksum from one read transaction, on a cursor of its own.

    The writer may go on applying batches meanwhile: the snapshot still describes one sequence.
    """
    cursor = connection.cursor()
    try:
        cursor.execute("BEGIN TRANSACTION")
        row = cursor.execute("SELECT last_seq FROM checkpoint WHERE id = 1").fetchone()
        taken = Snapshot(seq=int(row[0]) if row else 0, tables=checksums(cursor))
        cursor.execute("COMMIT")
        return taken
    finally:
        cursor.close()


def diff(live: Snapshot, rebuilt: Snapshot) -> Drift:
    """The tables whose checksums differ; raises `NotComparable` unless both are at the same sequence."""
    if live.seq != rebuilt.seq:
        raise NotComparable(live.seq, rebuilt.seq)
    differing = [
        TableDrift(table=name, live=live.tables.get(name), rebuilt=rebuilt.tables.get(name))
        for name in sorted(live.tables.keys() | rebuilt.tables.keys())
        if live.tables.get(name) != rebuilt.tables.get(name)
    ]
    return Drift(seq=live.seq, tables_differing=differing)


def compare(live: duckdb.DuckDBPyConnection, rebuilt: duckdb.DuckDBPyConnection) -> Drift:
    """Compare two open projections table by table; they must be at the same sequence."""
    return diff(snapshot(live), snapshot(rebuilt))


async def check(
    conn: bus.Connection,
    live: duckdb.DuckDBPyConnection,
    *,
    workdir: Path | None = None,
    prices: Prices | None = None,
    workers: int = 1,
) -> Drift:
    """Rebuild the log up to the live projection's sequence in a scratch file and compare the two.

    `live` is any connection to the live file (a projector's `Store.cursor()` works while it keeps
    applying: the live side is read in one transaction first). The scratch file goes in a temporary
    directory under `workdir` (default: the system's) and is removed afterwards.
    """
    taken = await asyncio.to_thread(snapshot, live)
    with tempfile.TemporaryDirectory(prefix="swarm-drift-", dir=workdir) as scratch:
        path = Path(scratch) / "rebuilt.duckdb"
        await rebuild(conn, path, until_seq=taken.seq, prices=prices, workers=workers)
        with contextlib.closing(duckdb.connect(str(path), read_only=True)) as rebuilt:
            return diff(taken, await asyncio.to_thread(snapshot, rebuilt))


def _wal(path: Path) -> Path:
    return path.with_name(f"{path.name}.wal")


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    _wal(path).unlink(missing_ok=True)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX: fsync the directory that holds the entry)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
