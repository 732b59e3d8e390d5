"""A minimal NATS client connection: the protocol's frames, parsed in bulk.

nats-py spends about 25 µs of Python on each message it delivers (a regular expression per frame, a
header dictionary, a `Msg`, the ordered consumer's metadata parse); reading the whole log through it
caps a projector near 30k messages/s. This connection does only what a log replay needs — connect and
authenticate, subscribe, publish, one request at a time — and hands delivered frames over as raw
tuples, for about 5 µs each (docs/performance.md, "Projection").
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from typing import Any
from urllib.parse import SplitResult, urlsplit

from bus.errors import BusError
from bus.settings import Settings

OK, PING, PONG, INFO, ERR = b"+OK", b"PING", b"PONG", b"INFO", b"-ERR"
_KEEP = 64 * 1_024  # compact the receive buffer once this much of it has been parsed


class WireError(BusError):
    """The server refused the connection or a request, or the connection was lost."""


# A delivered message: subject, reply subject, header block and body, as the server sent them.
Frame = tuple[bytes, bytes, bytes, bytes]


class _Protocol(asyncio.Protocol):
    """Parses what the server sends; deliveries on `sid` go to `frames`, replies to `replies`."""

    def __init__(self, max_buffered: int) -> None:
        self.frames: deque[Frame] = deque()
        self.buffered = 0  # bytes of the bodies in `frames`
        self.replies: deque[tuple[bytes, bytes]] = deque()  # header block and body
        self.info: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pongs: deque[asyncio.Future[None]] = deque()
        self.lost: BaseException | None = None
        self.sids: dict[bytes, bool] = {}  # subscription id -> its frames are deliveries (else replies)
        self._wake: asyncio.Future[None] | None = None
        self._buf = bytearray()
        self._pos = 0
        self._max = max_buffered
        self._paused = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.lost or exc or WireError("the server closed the connection")
        if not self.info.done():
            self.info.set_exception(WireError(f"connection lost before the server's INFO: {self.lost}"))
        for pong in self.pongs:
            if not pong.done():
                pong.set_exception(WireError(f"connection lost: {self.lost}"))
        self._notify()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        try:
            self._pos = self._parse(buf, self._pos)
        except WireError as exc:
            self.lost = exc
            assert self.transport is not None
            self.transport.close()
        if self._pos >= _KEEP or self._pos == len(buf):
            del buf[: self._pos]
            self._pos = 0
        if self.buffered > self._max and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._notify()

    def _parse(self, buf: bytearray, pos: int) -> int:
        size = len(buf)
        sids, frames, replies = self.sids, self.frames, self.replies
        while (end := buf.find(b"\r\n", pos)) >= 0:
            # A delivery: HMSG <subject> <sid> [reply] <header size> <total size>, or MSG without headers.
            with_header = buf.startswith(b"HMSG ", pos)
            if with_header or buf.startswith(b"MSG ", pos):
                head = bytes(buf[pos + (5 if with_header else 4) : end]).split()
                stop = end + 2 + int(head[-1])
                if stop + 2 > size:
                    break  # the body has not fully arrived
                body = end + 2 + (int(head[-2]) if with_header else 0)
                pos = stop + 2
                is_delivery = sids.get(head[1])
                if is_delivery:
                    reply = head[2] if len(head) == (5 if with_header else 4) else b""
                    frames.append((head[0], reply, bytes(buf[end + 2 : body]), bytes(buf[body:stop])))
                    self.buffered += stop - body
                elif is_delivery is not None:
                    replies.append((bytes(buf[end + 2 : body]), bytes(buf[body:stop])))
                continue  # (None: a subscription already dropped)
            line = bytes(buf[pos:end])
            op = line[:4]
            pos = end + 2
            if op == PING:
                assert self.transport is not None
                self.transport.write(b"PONG\r\n")
            elif op == PONG:
                if self.pongs:
                    self.pongs.popleft().set_result(None)
            elif op == INFO:
                if not self.info.done():
                    self.info.set_result(json.loads(line[5:]))
            elif op == ERR:
                raise WireError(f"the server said {line[5:].decode(errors='replace').strip()}")
            elif not line.startswith(OK):
                raise WireError(f"unexpected frame from the server: {line[:80]!r}")
        return pos

    def discard(self) -> None:
        """Drop every delivery held (their consumer is being replaced)."""
        self.frames.clear()
        self.taken(self.buffered)

    def taken(self, size: int) -> None:
        self.buffered -= size
        if self._paused and self.buffered <= self._max // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    async def wait(self) -> None:
        """Until something new arrives (or the connection is lost)."""
        self._wake = asyncio.get_running_loop().create_future()
        await self._wake

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


class Wire:
    """One connection to one server of `urls` (tried in order), for one reader."""

    def __init__(self, protocol: _Protocol, inbox: bytes) -> None:
        self._protocol = protocol
        self._inbox = inbox
        self._next_sid = 0

    @classmethod
    async def open(cls, settings: Settings, *, name: str, max_buffered: int) -> Wire:
        """Connect and authenticate; raise `WireError` naming every server tried when none answers."""
        failures = []
        for url in settings.url.split(","):
            try:
                async with asyncio.timeout(settings.connect_timeout):
                    return await cls._open(url.strip(), settings, name, max_buffered)
            except (OSError, TimeoutError, WireError) as exc:
                failures.append(f"{url.strip()}: {exc or type(exc).__name__}")
        raise WireError("no NATS server accepted the connection (" + "; ".join(failures) + ")")

    @classmethod
    async def _open(cls, url: str, settings: Settings, name: str, max_buffered: int) -> Wire:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        if parts.scheme != "nats":
            raise WireError(f"{parts.scheme}:// is not supported by the log reader's connection")
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(
            lambda: _Protocol(max_buffered), parts.hostname or "127.0.0.1", parts.port or 4222
        )
        try:
            _require_plain(await protocol.info)
            wire = cls(protocol, b"_INBOX." + secrets.token_hex(11).encode())
            # CONNECT and PING in one write: a refused login is read as the server's -ERR, not a broken pipe.
            await wire.flush(b"CONNECT " + json.dumps(_options(parts, settings, name)).encode() + b"\r\n")
            wire._subscribe_sid(wire._inbox + b".r", deliveries=False)
        except BaseException:
            transport.close()
            raise
        return wire

    @property
    def protocol(self) -> _Protocol:
        return self._protocol

    def _subscribe_sid(self, subject: bytes, *, deliveries: bool) -> bytes:
        self._next_sid += 1
        sid = str(self._next_sid).encode()
        self._protocol.sids[sid] = deliveries
        self._write(b"SUB " + subject + b" " + sid + b"\r\n")
        return sid

    def subscribe(self) -> tuple[bytes, bytes]:
        """A fresh delivery inbox and its subscription id; frames sent to it land in `protocol.frames`."""
        inbox = self._inbox + b".d" + str(self._next_sid + 1).encode()
        return inbox, self._subscribe_sid(inbox, deliveries=True)

    def unsubscribe(self, sid: bytes) -> None:
        self._protocol.sids.pop(sid, None)
        self._write(b"UNSUB " + sid + b"\r\n")

    def publish(self, subject: bytes, body: bytes = b"", reply: bytes = b"") -> None:
        head = b"PUB " + subject + (b" " + reply if reply else b"") + b" " + str(len(body)).encode()
        self._write(head + b"\r\n" + body + b"\r\n")

    async def request(self, subject: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Publish `payload` as JSON and wait for the (JSON) reply; one request at a time."""
        replies = self._protocol.replies
        replies.clear()
        self.publish(subject.encode(), json.dumps(payload).encode(), self._inbox + b".r")
        while not replies:
            self.raise_if_lost()
            await self._protocol.wait()
        header, body = replies.popleft()
        if header.startswith(b"NATS/1.0 503"):
            raise WireError(f"no responders on {subject}: is JetStream enabled on this server?")
        try:
            answer: dict[str, Any] = json.loads(body)
        except ValueError as exc:
            raise WireError(f"the reply from {subject} is not JSON: {body[:80]!r}") from exc
        return answer

    async def flush(self, before: bytes = b"") -> None:
        """Write `before`, then wait until the server has read everything so far (a PING, its PONG)."""
        pong = asyncio.get_running_loop().create_future()
        self._protocol.pongs.append(pong)
        self._write(before + b"PING\r\n")
        await pong

    def raise_if_lost(self) -> None:
        if self._protocol.lost is not None:
            raise WireError(f"connection lost: {self._protocol.lost}")

    def _write(self, data: bytes) -> None:
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise WireError("connection closed")
        transport.write(data)

    def close(self) -> None:
        transport = self._protocol.transport
        if transport is not None:
            transport.close()


def _require_plain(info: dict[str, Any]) -> None:
    if info.get("tls_required"):
        raise WireError("the server requires TLS, which the log reader's connection does not speak")


def _options(parts: SplitResult, settings: Settings, name: str) -> dict[str, Any]:
    """The CONNECT options: credentials from the URL first, then from the settings."""
    options: dict[str, Any] = {
        "verbose": False, "pedantic": False, "headers": True, "no_responders": True,
        "protocol": 1, "lang": "python", "version": "swarm", "name": name,
    }  # fmt: skip
    user, password = parts.username or settings.user, parts.password or settings.password
    if user is not None:
        options |= {"user": user, "pass": password or ""}
    elif settings.token is not None:
        options["auth_token"] = settings.token
    return options
