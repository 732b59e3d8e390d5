"""One log subscription per followed subject, fanned out in process to every socket that follows it.

A socket joins a subject's hub at any `after_seq`: it is attached to the hub's live stream first (its
records queue up), then it replays from the log what came before the hub's position at attach time,
then it takes the queued live records, skipping what the replay already gave. So each socket sees every
record after its `after_seq` once, in order, while NATS carries each record to the gateway only once
however many sockets watch it (shared/notes/perf-ceilings.md: per-socket consumers do not scale).

`follow` hands records to the socket's own task through its queue; `feed` goes further: once caught up,
the hub calls the socket's synchronous sink itself with each batch it reads, which saves a task wake-up
per record and socket, and lets the socket write a batch in one go.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence

import structlog

import bus

log = structlog.get_logger(__name__)


class Lagging(Exception):
    """The socket's queue of live records overflowed, or its hub stopped: it must resume from the log."""


_STOPPED = None  # the sentinel a hub sends when its subscription ends

Sink = Callable[[Sequence[bus.Record]], bool]
"""Takes records (in order, never empty) synchronously; False when it wants no more (it fell behind, or
it is done)."""


class _Hub:
    def __init__(self, log_: bus.Log, subject: str, head: int, queue_size: int) -> None:
        self.subject = subject
        self.head = head  # the last sequence this hub has delivered (or its start)
        self._log = log_
        self._queue_size = queue_size
        self._queues: set[asyncio.Queue[bus.Record | None]] = set()
        self._sinks: dict[Sink, asyncio.Future[None]] = {}  # each with what its `feed` waits on
        self._task = asyncio.create_task(self._follow())

    def attach(self) -> tuple[asyncio.Queue[bus.Record | None], int]:
        queue: asyncio.Queue[bus.Record | None] = asyncio.Queue(self._queue_size)
        self._queues.add(queue)
        return queue, self.head

    def detach(self, queue: asyncio.Queue[bus.Record | None]) -> bool:
        """Forget a socket's queue; True when no socket is left."""
        self._queues.discard(queue)
        return not self._queues and not self._sinks

    def plug(self, queue: asyncio.Queue[bus.Record | None], sink: Sink, after: int) -> asyncio.Future[None]:
        """Replace a caught-up socket's queue by its sink: what is queued goes to the sink now (what is
        after `after`), the rest as it arrives. The future ends when the sink is unplugged, or with
        `Lagging` when the hub stops first."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.discard(queue)
        queued: list[bus.Record] = []
        while not queue.empty():
            record = queue.get_nowait()
            if record is _STOPPED:
                done.set_exception(Lagging(f"{self.subject}: resume after {after}"))
                return done
            if record.seq > after:
                queued.append(record)
        if queued and not sink(queued):
            done.set_result(None)
            return done
        self._sinks[sink] = done
        return done

    def unplug(self, sink: Sink) -> bool:
        """Forget a socket's sink; True when no socket is left."""
        done = self._sinks.pop(sink, None)
        if done is not None and not done.done():
            done.set_result(None)
        return not self._queues and not self._sinks

    async def stop(self) -> None:
        # `wait`, not `await self._task` under suppress(CancelledError): that would also swallow the
        # cancellation of the socket task stopping the hub, which then never ends.
        self._task.cancel()
        await asyncio.wait({self._task})

    async def _follow(self) -> None:
        try:
            async for batch in self._log.batches(self.subject, after_seq=self.head):
                self.head = batch[-1].seq
                for queue in list(self._queues):
                    all(self._offer(queue, record) for record in batch)  # up to the first that overflows
                for sink in list(self._sinks):
                    self._give(sink, batch)
        except Exception as exc:  # the subscription failed: every socket resumes on its own
            log.warning("hub_failed", subject=self.subject, error=repr(exc))
        finally:
            for queue in list(self._queues):
                self._offer(queue, _STOPPED)
            for done in self._sinks.values():
                if not done.done():
                    done.set_exception(Lagging(f"{self.subject}: the hub stopped"))

    def _give(self, sink: Sink, batch: list[bus.Record]) -> None:
        try:
            keep = sink(batch)
        except Exception as exc:  # that socket's failure, not the hub's: it ends with the error
            done = self._sinks.pop(sink)
            if not done.done():
                done.set_exception(exc)
            return
        if not keep:
            self.unplug(sink)

    def _offer(self, queue: asyncio.Queue[bus.Record | None], record: bus.Record | None) -> bool:
        """Queue a record; False when the queue was full (it then ends with `_STOPPED` instead)."""
        try:
            queue.put_nowait(record)
        except asyncio.QueueFull:
            self._queues.discard(queue)  # this socket fell behind: it ends and resumes from the log
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(_STOPPED)
            return False
        return True


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
            async with contextlib.aclosing(self._replay(subject, after_seq, head)) as replay:
                async for batch in replay:
                    for record in batch:
                        yield record
                        last = record.seq
            while (live := await queue.get()) is not _STOPPED:
                if live.seq > last:
                    yield live
                    last = live.seq
            raise Lagging(f"{subject}: resume after {last}")
        finally:
            await self._leave(hub, queue)

    async def feed(self, subject: str, after_seq: int, sink: Sink) -> None:
        """Give `sink` the records of `subject` after `after_seq`, in order, then live, until it returns
        False; `Lagging` if it falls behind while catching up, or the hub stops."""
        hub, queue, head = await self._attach(subject)
        plugged: Sink | None = None
        try:
            last = after_seq
            async with contextlib.aclosing(self._replay(subject, after_seq, head)) as replay:
                async for batch in replay:
                    if not sink(batch):
                        return
                    last = batch[-1].seq
            plugged = sink
            await hub.plug(queue, sink, last)
        finally:
            await self._leave(hub, queue, plugged)

    async def _replay(self, subject: str, after_seq: int, head: int) -> AsyncGenerator[list[bus.Record]]:
        """What the log holds of `subject` after `after_seq`, up to the hub's position `head`, in the
        batches it is read in."""
        if after_seq >= head:
            return
        async with contextlib.aclosing(self._log.batches(subject, after_seq=after_seq, follow=False)) as read:
            async for batch in read:
                if batch[-1].seq > head:
                    if kept := [record for record in batch if record.seq <= head]:
                        yield kept
                    return
                yield batch

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

    async def _leave(
        self, hub: _Hub, queue: asyncio.Queue[bus.Record | None], sink: Sink | None = None
    ) -> None:
        """Detach a socket's queue (and its sink); the hub stops with its last socket."""
        async with self._lock:
            alone = hub.detach(queue)
            if sink is not None:
                alone = hub.unplug(sink)
            if alone and self._hubs.get(hub.subject) is hub:
                del self._hubs[hub.subject]
            else:
                return
        await hub.stop()
