"""Log readers: what `Log.batches` reads through, and the one built on nats-py's ordered consumer.

nats-py leaves an ordered consumer on the server when its subscription ends (the server drops it only
after `ABANDONED_AFTER` without interest), and a reader cancelled while nats-py is still creating one
never gets to close it. A gateway opening readers faster than that (sockets resuming, pages of events)
would pile up consumers until the server refuses new ones; `Ordered` opens and closes its consumer so
that neither happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from bus.record import DIGEST, Record
from bus.settings import ABANDONED_AFTER

# No count limit: nats-py drops what overflows it and its ordered consumer does not notice the gap.
# The server's flow-control window (at most 32 MiB) bounds what is in flight, under the byte limit.
_PENDING_MSGS = 0
_PENDING_BYTES = 64 * 1_024 * 1_024

_closing: set[asyncio.Task[None]] = set()  # cleanups of readers whose opener was cancelled


class Reader(Protocol):
    """Messages of the stream in order from a sequence, in chunks, as the caller takes them."""

    async def open(self) -> None: ...

    async def empty(self) -> bool:
        """Whether there was nothing to read when the reader opened."""
        ...

    async def chunk(self, most: int, *, stop_at_end: bool) -> tuple[list[Record], bool]:
        """Wait for a message, then take those already buffered, up to `most`; and whether the end is read."""
        ...

    async def close(self) -> None: ...


class Ordered:
    """A `Reader` on nats-py's ordered push consumer, sharing the process's connection."""

    def __init__(self, js: JetStreamContext, stream: str, subject: str, after_seq: int) -> None:
        self._js = js
        self._stream = stream
        self._subject = subject
        self._after = after_seq
        self._sub: JetStreamContext.PushSubscription | None = None

    async def open(self) -> None:
        self._sub = await open_reader(self._js, self._stream, self._subject, self._after)

    async def empty(self) -> bool:
        info = await self._opened().consumer_info()
        return info.num_pending == 0 and (info.delivered is None or not info.delivered.consumer_seq)

    async def chunk(self, most: int, *, stop_at_end: bool) -> tuple[list[Record], bool]:
        sub = self._opened()
        chunk: list[Record] = []
        msg: Msg | None = await sub.next_msg(timeout=None)
        while msg is not None:
            chunk.append(_record(msg))
            if stop_at_end and msg.metadata.num_pending == 0:
                return chunk, True
            msg = _buffered(sub) if len(chunk) < most else None
        return chunk, False

    async def close(self) -> None:
        if self._sub is not None:
            await close_reader(self._sub, self._stream)

    def _opened(self) -> JetStreamContext.PushSubscription:
        assert self._sub is not None, "open() the reader first"
        return self._sub


async def open_reader(
    js: JetStreamContext, stream: str, subject: str, after_seq: int
) -> JetStreamContext.PushSubscription:
    """An ordered push consumer on `subject` from `after_seq + 1`; close it with `close_reader`."""
    opening = asyncio.ensure_future(
        js.subscribe(
            subject,
            stream=stream,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after_seq + 1,
                inactive_threshold=ABANDONED_AFTER,
            ),
            pending_msgs_limit=_PENDING_MSGS,
            pending_bytes_limit=_PENDING_BYTES,
        )
    )
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(lambda done: _close_later(done, stream))
        raise


async def close_reader(sub: JetStreamContext.PushSubscription, stream: str) -> None:
    """Unsubscribe, and ask the server to delete the consumer without waiting for its answer."""
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    with contextlib.suppress(Exception):  # even when unsubscribing failed: the server keeps no consumer
        conn = sub._conn  # nats-py keeps the connection and the (reset-aware) consumer name private
        await conn.publish(f"$JS.API.CONSUMER.DELETE.{stream}.{sub._consumer}", reply=conn.new_inbox())


def _close_later(opened: asyncio.Future[JetStreamContext.PushSubscription], stream: str) -> None:
    if opened.cancelled() or opened.exception() is not None:
        return
    task = asyncio.ensure_future(close_reader(opened.result(), stream))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def _buffered(sub: JetStreamContext.PushSubscription) -> Msg | None:
    """The next message the subscription already holds, taken as `next_msg` takes it (the same
    accounting, so flow control sees it consumed) without its task, timer and name per message."""
    queue = sub._pending_queue
    if queue.empty():
        return None
    msg: Msg = queue.get_nowait()
    sub._pending_size -= len(msg.data)
    queue.task_done()
    return msg


def _record(msg: Msg) -> Record:
    meta = msg.metadata
    return Record(
        seq=meta.sequence.stream,
        subject=msg.subject,
        data=msg.data,
        digest=(msg.headers or {}).get(DIGEST),
        time=meta.timestamp,
    )
