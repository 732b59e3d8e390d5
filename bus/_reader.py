"""A log reader's ordered consumer: opened so that a cancellation cannot orphan it, and deleted on close.

nats-py leaves an ordered consumer on the server when its subscription ends (the server drops it only
after `ABANDONED_AFTER` without interest), and a reader cancelled while nats-py is still creating one
never gets to close it. A gateway opening readers faster than that (sockets resuming, pages of events)
would pile up consumers until the server refuses new ones.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

# No count limit: nats-py drops what overflows it and its ordered consumer does not notice the gap.
# The server's flow-control window (at most 32 MiB) bounds what is in flight, under the byte limit.
_PENDING_MSGS = 0
_PENDING_BYTES = 64 * 1_024 * 1_024
ABANDONED_AFTER = 10.0  # seconds: the server deletes a consumer whose reader vanished (a crash)

_closing: set[asyncio.Task[None]] = set()  # cleanups of readers whose opener was cancelled


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
