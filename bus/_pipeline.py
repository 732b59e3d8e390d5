"""Pipelined JetStream publishing: core publishes with a reply inbox, many acknowledgements in flight.

nats-py's `publish_async` reaches under half of what one connection can carry (notes/perf-ceilings.md);
one wildcard inbox subscription and a dict of futures is the thin path that reaches the ceiling.
"""

from __future__ import annotations

import asyncio
import re
from itertools import count

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.errors import ConcurrencyConflict, PublishFailed

_WRONG_LAST_SEQUENCE = {10071, 10164}  # "wrong last sequence: N"; a cluster may omit the number
_LAST_SEQUENCE = re.compile(r"(\d+)\s*$")


class Ack(msgspec.Struct, frozen=True):
    seq: int
    duplicate: bool = False


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_PubAck)


class Pipeline:
    """Publishes to JetStream with up to `max_in_flight` acknowledgements outstanding.

    A publish that gets no acknowledgement in time is sent again with the same headers, so the stream's
    duplicate window (keyed by `Nats-Msg-Id`) makes the retry safe. Deadlines are enforced by one timer
    that sweeps every quarter `timeout` (a publish waits between 1 and 1.25 `timeout`): an
    `asyncio.timeout` per publish cost a quarter of the client's CPU (docs/performance.md).
    """

    def __init__(self, nc: Client, *, max_in_flight: int, timeout: float, attempts: int) -> None:
        self._nc = nc
        self._slots = asyncio.Semaphore(max_in_flight)
        self._timeout = timeout
        self._attempts = attempts
        self._inbox = nc.new_inbox()
        self._prefix = f"{self._inbox}."
        self._tokens = count()
        self._waiting: dict[str, tuple[float, asyncio.Future[Msg | None]]] = {}  # in publish order
        self._subscription: Subscription | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        self._sweep()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        for _, future in self._waiting.values():
            future.cancel()

    def _sweep(self) -> None:
        """Give up on the waits past their deadline; deadlines grow with the dict's order, so they lead it."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = []
        for token, (deadline, _) in self._waiting.items():
            if deadline > now:
                break
            expired.append(token)
        for token in expired:
            _, future = self._waiting.pop(token)
            if not future.done():
                future.set_result(None)
        self._sweeper = loop.call_later(self._timeout / 4, self._sweep)

    async def _on_reply(self, msg: Msg) -> None:
        waiting = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if waiting is not None and not waiting[1].done():
            waiting[1].set_result(msg)

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> Ack:
        await self._slots.acquire()  # not `async with`: two fewer coroutine objects per publish
        try:
            for _ in range(self._attempts):
                reply = await self._round_trip(subject, data, headers)
                if reply is not None:
                    return _parse(subject, reply, headers)
        finally:
            self._slots.release()
        raise PublishFailed(subject, f"no acknowledgement after {self._attempts} attempts")

    async def _round_trip(self, subject: str, data: bytes, headers: dict[str, str]) -> Msg | None:
        """The acknowledgement, or `None` when the sweep found it overdue."""
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg | None] = loop.create_future()
        self._waiting[token] = (loop.time() + self._timeout, future)
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
            return await future
        finally:
            self._waiting.pop(token, None)


def _parse(subject: str, reply: Msg, headers: dict[str, str]) -> Ack:
    status = (reply.headers or {}).get("Status")
    if status == "503":
        raise PublishFailed(subject, "no stream accepts this subject (is the log provisioned?)")
    try:
        ack = _ack_decoder.decode(reply.data)
    except msgspec.DecodeError as exc:
        raise PublishFailed(subject, f"unreadable acknowledgement {reply.data[:200]!r}") from exc
    if ack.error is None:
        return Ack(seq=ack.seq, duplicate=ack.duplicate)
    if ack.error.err_code in _WRONG_LAST_SEQUENCE:
        match = _LAST_SEQUENCE.search(ack.error.description)
        expected = int(headers.get("Nats-Expected-Last-Subject-Sequence", "-1"))
        raise ConcurrencyConflict(subject, expected, int(match.group(1)) if match else None)
    raise PublishFailed(subject, f"{ack.error.description} (code {ack.error.err_code})")
