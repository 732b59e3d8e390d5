"""One share of a parallel rebuild: the whole log read, one partition of it folded into a file of its own.

`rebuild(..., workers=N)` starts N processes (`python -m projectors.partition`, the job as JSON on
stdin). Runs are split by a stable hash of their id; every other aggregate (projects, patterns, keys)
belongs to partition 0. The fold never looks across aggregates, so the union of the partitions' rows
is exactly what one fold of the whole log gives; each process has its own interpreter, so the folds
run on every core instead of one.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import zlib
from pathlib import Path

import msgspec
import structlog

import bus
from projectors.prices import Prices
from projectors.store import Keep, Store, open_store

_RUN = "run"


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """What one worker does: read the log through `until_seq`, fold partition `index` of `count`."""

    bus: bus.Settings
    path: str
    index: int
    count: int
    until_seq: int
    max_batch: int
    prices: Prices


def owner(subject: str, count: int) -> int:
    """The partition of the aggregate a subject names (`swarm.<tenant>.<cmd|evt>.<aggregate>.<id>...`)."""
    parts = subject.split(".", 5)
    if len(parts) >= 5 and parts[3] == _RUN:
        return zlib.crc32(parts[4].encode()) % count
    return 0


async def replay(
    conn: bus.Connection,
    store: Store,
    until_seq: int | None,
    max_batch: int,
    *,
    part: tuple[int, int] = (0, 1),
) -> int:
    """Apply the log through `until_seq` (or its current end) to `store`, keeping only partition
    `part = (index, count)`; the checkpoint still moves over every message. Returns the last sequence."""
    last = until_seq if until_seq is not None else float("inf")
    if last <= 0:
        return 0
    index, count = part
    keep = None if count == 1 else (lambda record: owner(record.subject, count) == index)
    batches = conn.log.batches(max_batch=max_batch, follow=False)
    try:
        async for batch in batches:
            done = batch[-1].seq >= last
            chunk = [record for record in batch if record.seq <= last] if done else batch
            await _apply(store, chunk, keep)
            if done:
                break
    finally:
        await batches.aclose()
    return store.last_seq


async def _apply(store: Store, records: list[bus.Record], keep: Keep | None) -> None:
    """Apply in a worker thread (DuckDB blocks; the next batch streams in meanwhile).

    A cancellation waits for the thread to finish its batch, so the file is never closed under it.
    """
    applying = asyncio.ensure_future(asyncio.to_thread(store.apply, records, keep))
    try:
        await asyncio.shield(applying)
    except asyncio.CancelledError:
        await asyncio.wait({applying})
        raise


async def run(job: Job) -> int:
    async with bus.connect(job.bus, name=f"swarm-rebuild-{job.index}") as conn:
        with open_store(Path(job.path), job.prices) as store:
            last = await replay(conn, store, job.until_seq, job.max_batch, part=(job.index, job.count))
            store.connection.execute("CHECKPOINT")
    return last


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    job = msgspec.json.decode(sys.stdin.buffer.read(), type=Job)
    asyncio.run(run(job))


if __name__ == "__main__":
    main()
