"""Work queues: a durable pull consumer shared by every replica of a role.

The handler's outcome decides the acknowledgement, in one place (`Worker._settle`):

    returns                       ack
    raises Retry(delay)           nak with that delay; the last allowed delivery is terminated instead
    raises Reject / bad message   term, and the failure is recorded through `on_failure`
    raises anything else          logged with its traceback, then treated as Retry
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
import structlog
from msgspec import Meta
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus.errors import BusError
from bus.record import DIGEST
from schemas import InvalidMessage

log = structlog.get_logger(__name__)


class Retry(BusError):
    """Raised by a handler: the work may succeed later; deliver it again after `delay` seconds."""

    def __init__(self, reason: str, delay: float = 1.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class Reject(BusError):
    """Raised by a handler: the work can never succeed; do not deliver it again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Queue(msgspec.Struct, frozen=True, kw_only=True):
    """A durable consumer: its name, what it takes, and its delivery rules."""

    durable: str
    subject: str
    ack_wait: Annotated[float, Meta(gt=0)] = 30.0
    max_deliver: Annotated[int, Meta(ge=1)] = 5  # bounded: JetStream's -1 (unlimited) is refused
    backoff: tuple[float, ...] = (1.0, 5.0, 30.0)

    def __post_init__(self) -> None:
        if self.max_deliver < 1 or self.ack_wait <= 0:
            raise ValueError("a Queue needs max_deliver >= 1 and ack_wait > 0")


@dataclass(slots=True)
class Delivery:
    """One message handed to a handler."""

    subject: str
    data: bytes
    seq: int
    attempt: int
    digest: str | None
    _msg: Msg = field(repr=False)

    async def in_progress(self) -> None:
        """Tell the server the work is alive, resetting its ack timer."""
        await self._msg.in_progress()


Handler = Callable[[Delivery], Awaitable[None]]
FailureRecorder = Callable[[Delivery, str], Awaitable[None]]


async def _log_failure(delivery: Delivery, reason: str) -> None:
    log.error("work_rejected", subject=delivery.subject, seq=delivery.seq, reason=reason)


class Worker:
    """Fetches from a `Queue` in batches and runs at most `concurrency` handlers at once."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        queue: Queue,
        handler: Handler,
        *,
        concurrency: int = 4,
        on_failure: FailureRecorder = _log_failure,
    ) -> None:
        self._js = js
        self._stream = stream
        self._queue = queue
        self._handler = handler
        self._on_failure = on_failure
        self._concurrency = concurrency
        self._free = concurrency
        self._freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()

    def consumer_config(self) -> ConsumerConfig:
        # No server-side BackOff: it would replace ack_wait and redeliver long work that is still
        # heartbeating; retries are delayed by nak(delay) instead.
        queue = self._queue
        return ConsumerConfig(
            durable_name=queue.durable,
            filter_subject=queue.subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=queue.ack_wait,
            max_deliver=queue.max_deliver,
            max_ack_pending=max(self._concurrency * 4, 64),
        )

    async def run(self) -> None:
        """Take work until `shutdown()`; in-flight handlers finish before this returns."""
        sub = await self._js.pull_subscribe(
            self._queue.subject,
            durable=self._queue.durable,
            stream=self._stream,
            config=self.consumer_config(),
        )
        try:
            while not self._stopping.is_set():
                await self._wait_for_slot()
                if self._stopping.is_set():
                    break
                for msg in await self._fetch(sub, self._free):
                    if self._stopping.is_set():  # fetched while shutting down: hand it back at once
                        await _quietly(msg.nak())
                    else:
                        self._start(msg)
            if self._in_flight:
                await asyncio.wait(self._in_flight)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def shutdown(self, grace: float = 30.0) -> None:
        """Stop fetching; give in-flight work `grace` seconds, then hand it back for redelivery."""
        self._stopping.set()
        self._freed.set()
        if self._in_flight:
            _, late = await asyncio.wait(self._in_flight, timeout=grace)
            for task in late:
                task.cancel()

    async def _wait_for_slot(self) -> None:
        while self._free == 0 and not self._stopping.is_set():
            self._freed.clear()
            await self._freed.wait()

    async def _fetch(self, sub: JetStreamContext.PullSubscription, batch: int) -> list[Msg]:
        try:
            return await sub.fetch(batch, timeout=1.0)
        except (TimeoutError, NatsTimeout):
            return []

    def _start(self, msg: Msg) -> None:
        self._free -= 1
        task = asyncio.create_task(self._handle(msg))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _handle(self, msg: Msg) -> None:
        meta = msg.metadata
        delivery = Delivery(
            subject=msg.subject,
            data=msg.data,
            seq=meta.sequence.stream,
            attempt=meta.num_delivered,
            digest=(msg.headers or {}).get(DIGEST),
            _msg=msg,
        )
        try:
            async with _heartbeat(delivery, self._queue.ack_wait / 3):
                await self._handler(delivery)
        except asyncio.CancelledError:
            await _quietly(msg.nak())  # shutting down: hand it back at once
            raise
        except Exception as exc:  # the last resort: the outcome still decides the acknowledgement
            await self._settle(delivery, exc)
        else:
            await self._settle(delivery, None)
        finally:
            self._free += 1
            self._freed.set()

    async def _settle(self, delivery: Delivery, error: Exception | None) -> None:
        msg, last = delivery._msg, delivery.attempt >= self._queue.max_deliver
        match error:
            case None:
                await _quietly(msg.ack())
            case Reject(reason=reason) | InvalidMessage(detail=reason):
                await self._terminate(delivery, reason)
            case Retry(reason=reason) if last:
                await self._terminate(delivery, f"gave up after {delivery.attempt} attempts: {reason}")
            case Retry(delay=delay):
                await _quietly(msg.nak(delay=delay))
            case _ if last:
                log.error("work_failed", subject=delivery.subject, seq=delivery.seq, exc_info=error)
                await self._terminate(delivery, f"gave up after {delivery.attempt} attempts: {error!r}")
            case _:
                log.error("work_failed", subject=delivery.subject, seq=delivery.seq, exc_info=error)
                await _quietly(msg.nak(delay=self._delay(delivery.attempt)))

    async def _terminate(self, delivery: Delivery, reason: str) -> None:
        await _quietly(delivery._msg.term())
        await self._on_failure(delivery, reason)

    def _delay(self, attempt: int) -> float:
        backoff = self._queue.backoff or (1.0,)
        return backoff[min(attempt, len(backoff)) - 1]


@contextlib.asynccontextmanager
async def _heartbeat(delivery: Delivery, interval: float) -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            await asyncio.sleep(interval)
            await _quietly(delivery.in_progress())

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


async def _quietly(acknowledgement: Awaitable[None]) -> None:
    """An acknowledgement lost with the connection is redelivered by the server; never fatal here."""
    try:
        await acknowledgement
    except Exception as exc:  # any transport failure means the server redelivers
        log.warning("ack_failed", error=repr(exc))
