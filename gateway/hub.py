"""One log subscription per followed subject, fanned out in process to every socket that follows it.

A socket joins a subject's hub at any `after_seq`: it is attached to the hub's live stream first (its
records queue up), then it replays from the log what came before the hub's position at attach time,
then it takes the queued live records, skipping what the replay already gave. So each socket sees every
record after its `after_seq` once, in order, while NATS carries each record to the gateway only once
however many sockets watch it (shared/notes/perf-ceilings.md: per-socket consumers do not scale).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import structlog

import bus

log = structlog.get_logger(__name__)


class Lagging(Exception):
    """The socket's queue of live records overflowed, or its hub stopped: it must resume from the log."""


_STOPPED = None  # the sentinel a hub sends when its subscription ends


class _Hub:
    def __init__(self, log_: bus.Log, subject: str, head: int, queue_size: int) -> None:
        self.subject = subject
        self.head = head  # the last sequence this hub has delivered (or its start)
        self._log = log_
        self._queue_size = queue_size
        self._queues: set[asyncio.Queue[bus.Record | None]] = set()
        self._task = asyncio.create_task(self._follow())

    def attach(self) -> tuple[asyncio.Queue[bus.Record | None], int]:
        queue: asyncio.Queue[bus.Record | None] = asyncio.Queue(self._queue_size)
        self._queues.add(queue)
        return queue, self.head

    def detach(self, queue: asyncio.Queue[bus.Record | None]) -> bool:
        """Forget a socket's queue; True when no socket is left."""
        self._queues.discard(queue)
        return not self._queues

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _follow(self) -> None:
        try:
            async for record in self._log.follow(self.subject, after_seq=self.head):
                self.head = record.seq
                for queue in list(self._queues):
                    self._offer(queue, record)
        except Exception as exc:  # the subscription failed: every socket resumes on its own
            log.warning("hub_failed", subject=self.subject, error=repr(exc))
        finally:
            for queue in list(self._queues):
                self._offer(queue, _STOPPED)

    def _offer(self, queue: asyncio.Queue[bus.Record | None], record: bus.Record | None) -> None:
        try:
            queue.put_nowait(record)
        except asyncio.QueueFull:
            self._queues.discard(queue)  # this socket fell behind: it ends and resumes from the log
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(_STOPPED)


class Hubs:
    """The hubs of one gateway process, created on first use and stopped with their last socket."""

    def __init__(self, log_: bus.Log, queue_size: int = 10_000) -> None:
        self._log = log_
        self._queue_size = queue_size
        self._hubs: dict[str, _Hub] = {}
        self._lock = asyncio.Lock()

    @property
    def subjects(self) -> int:
        return len(self._hubs)

    async def follow(self, subject: str, after_seq: int) -> AsyncGenerator[bus.Record]:
        """The records of `subject` after `after_seq`, in order, then live; `Lagging` if it falls behind."""
        hub, queue, head = await self._attach(subject)
        try:
            last = after_seq
            if after_seq < head:
                async for record in self._log.read(subject, after_seq=after_seq):
                    if record.seq > head:
                        break
                    yield record
                    last = record.seq
            while (live := await queue.get()) is not _STOPPED:
                if live.seq > last:
                    yield live
                    last = live.seq
            raise Lagging(f"{subject}: resume after {last}")
        finally:
            await self._detach(hub, queue)

    async def close(self) -> None:
        async with self._lock:
            hubs, self._hubs = list(self._hubs.values()), {}
        for hub in hubs:
            await hub.stop()

    async def _attach(self, subject: str) -> tuple[_Hub, asyncio.Queue[bus.Record | None], int]:
        async with self._lock:
            hub = self._hubs.get(subject)
            if hub is None:
                hub = _Hub(self._log, subject, await self._log.end(), self._queue_size)
                self._hubs[subject] = hub
            queue, head = hub.attach()
        return hub, queue, head

    async def _detach(self, hub: _Hub, queue: asyncio.Queue[bus.Record | None]) -> None:
        async with self._lock:
            if hub.detach(queue) and self._hubs.get(hub.subject) is hub:
                del self._hubs[hub.subject]
            else:
                return
        await hub.stop()
