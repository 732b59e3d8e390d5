"""A parallel rebuild: the log read once, its runs folded by several processes at once.

`rebuild(..., workers=N)` reads the log in its own process and hands every batch to N worker processes
(`python -m projectors.partition`), split by a stable hash of the run id; every other aggregate
(projects, patterns, keys) goes to worker 0. Each worker folds its share into a file of its own, and the
rebuild merges the files. The fold never looks across aggregates, so the union of the workers' rows is
exactly one fold of the whole log; each worker has its own interpreter, so the folds use every core.

A worker reads length-prefixed msgpack frames on stdin: first its `Job`, then `Share`s. A share names
the last sequence of its batch, so every worker's checkpoint moves over the whole log, whatever its
share of it. Its stderr goes to `<part>.log`, whose last lines explain a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
import zlib
from pathlib import Path
from typing import BinaryIO

import msgspec
import structlog

import bus
from projectors.errors import ProjectorError
from projectors.prices import Prices
from projectors.store import open_store, require_contiguous

_RUN = "run"
_LENGTH = struct.Struct(">I")
_QUEUED = 4  # shares waiting per worker: enough to keep each busy, bounded so memory stays flat


class Job(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    prices: Prices


class Share(msgspec.Struct, frozen=True):
    """A worker's records of one batch, and the batch's last sequence."""

    through: int
    records: list[bus.Record]


class RebuildFailed(ProjectorError):
    """A worker of a parallel rebuild failed."""

    def __init__(self, index: int, returncode: int, detail: str) -> None:
        super().__init__(f"rebuild worker {index} failed (exit status {returncode}): {detail}")
        self.index = index
        self.returncode = returncode
        self.detail = detail


def owner(subject: str, count: int) -> int:
    """The worker of the aggregate a subject names (`swarm.<tenant>.<cmd|evt>.<aggregate>.<id>...`)."""
    parts = subject.split(".", 5)
    if len(parts) >= 5 and parts[3] == _RUN:
        return zlib.crc32(parts[4].encode()) % count
    return 0


class _Worker:
    """One worker process and the queue of shares its feeder writes to its stdin."""

    def __init__(self, index: int, part: Path, process: asyncio.subprocess.Process) -> None:
        self.index = index
        self.part = part
        self.process = process
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(_QUEUED)

    @classmethod
    async def start(cls, index: int, part: Path, prices: Prices) -> _Worker:
        with _log_path(part).open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "projectors.partition",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        worker = cls(index, part, process)
        worker.queue.put_nowait(msgspec.msgpack.encode(Job(path=str(part), prices=prices)))
        return worker

    async def feed(self) -> None:
        """Write the queued frames until `None`, then close stdin and wait for a clean exit."""
        stdin = self.process.stdin
        assert stdin is not None
        broken = False
        try:
            while (frame := await self.queue.get()) is not None:
                stdin.write(_LENGTH.pack(len(frame)) + frame)
                await stdin.drain()
            stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            broken = True  # it stopped reading: its exit status and log say why
        if await self.process.wait() != 0 or broken:
            raise self.failure()

    def failure(self) -> RebuildFailed:
        lines = _log_path(self.part).read_bytes().decode(errors="replace").strip().splitlines()
        return RebuildFailed(self.index, self.process.returncode or 0, " / ".join(lines[-3:]) or "no output")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


async def fold_in_parallel(
    conn: bus.Connection, parts: list[Path], end: int, prices: Prices, max_batch: int
) -> None:
    """Read the log through `end` and have one worker per file of `parts` fold its share into it."""
    workers: list[_Worker] = []
    try:
        for index, part in enumerate(parts):
            workers.append(await _Worker.start(index, part, prices))
        try:
            async with asyncio.TaskGroup() as group:
                for worker in workers:
                    group.create_task(worker.feed())
                await _deal(conn, workers, end, max_batch)
        except BaseExceptionGroup as failed:
            raise _first(failed) from None
    except BaseException:
        await asyncio.gather(*(worker.stop() for worker in workers))
        raise
    finally:
        for part in parts:
            _log_path(part).unlink(missing_ok=True)


async def _deal(conn: bus.Connection, workers: list[_Worker], end: int, max_batch: int) -> None:
    """Split the log by owner and queue each worker a share whenever it has `max_batch` records of its
    own (a transaction per share: fewer, fuller shares rewrite each run less often), and at the end."""
    encoder = msgspec.msgpack.Encoder()
    shares: list[list[bus.Record]] = [[] for _ in workers]
    last = 0
    batches = conn.log.batches(max_batch=max_batch, follow=False)
    try:
        async for batch in batches:
            chunk = [record for record in batch if record.seq <= end]
            require_contiguous(last, chunk)
            for record in chunk:
                shares[owner(record.subject, len(workers))].append(record)
            last = chunk[-1].seq
            for worker, share in zip(workers, shares, strict=True):
                if len(share) >= max_batch or last >= end:
                    await worker.queue.put(encoder.encode(Share(last, share)))
                    share.clear()
            if last >= end:
                break
    finally:
        await batches.aclose()
    for worker in workers:
        await worker.queue.put(None)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """A worker's failure rather than the group around it (the other tasks were only cancelled)."""
    failures = group.subgroup(RebuildFailed)
    return failures.exceptions[0] if failures else group.exceptions[0]


def _log_path(part: Path) -> Path:
    return part.with_name(f"{part.name}.log")


def _frames(stream: BinaryIO) -> msgspec.Raw | None:
    """The next length-prefixed frame, or `None` at the end of the stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    return msgspec.Raw(stream.read(size))


def main() -> None:
    """The worker: fold the shares arriving on stdin into the job's file, then checkpoint it."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    stdin = sys.stdin.buffer
    first = _frames(stdin)
    if first is None:
        raise SystemExit("no job on stdin")
    job = msgspec.msgpack.decode(first, type=Job)
    shares = msgspec.msgpack.Decoder(Share)
    with open_store(Path(job.path), job.prices) as store:
        while (frame := _frames(stdin)) is not None:
            share = shares.decode(frame)
            store.apply_share(share.records, share.through)
        store.connection.execute("CHECKPOINT")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
