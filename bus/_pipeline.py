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
    duplicate window (keyed by `Nats-Msg-Id`) makes the retry safe.
    """

    def __init__(self, nc: Client, *, max_in_flight: int, timeout: float, attempts: int) -> None:
        self._nc = nc
        self._slots = asyncio.Semaphore(max_in_flight)
        self._timeout = timeout
        self._attempts = attempts
        self._inbox = nc.new_inbox()
        self._tokens = count()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        for future in self._waiting.values():
            future.cancel()

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._inbox) + 1 :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> Ack:
        async with self._slots:
            for _ in range(self._attempts):
                reply = await self._round_trip(subject, data, headers)
                if reply is not None:
                    return _parse(subject, reply, headers)
        raise PublishFailed(subject, f"no acknowledgement after {self._attempts} attempts")

    async def _round_trip(self, subject: str, data: bytes, headers: dict[str, str]) -> Msg | None:
        token = str(next(self._tokens))
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await self._nc.publish(subject, data, reply=f"{self._inbox}.{token}", headers=headers)
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            return None
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
