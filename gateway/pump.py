"""One WebSocket's outgoing side: a bounded queue of frames, a writer, position frames, and the close.

The producer (`offer`) never waits: when the client has fallen `queue` frames behind, the socket is
closed with `SLOW` and the last sequence it was sent, so memory per socket stays bounded and the client
can resume from exactly there.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import msgspec
import structlog
from aiohttp import WSMsgType, web

from gateway.metrics import Metrics

log = structlog.get_logger(__name__)

# Close codes (README, "WebSocket protocol").
NORMAL = 1000  # the run ended: the final frame was sent
GOING_AWAY = 1001  # the replica is shutting down: reconnect (to any replica) with after_seq
INTERNAL = 1011  # the relay failed (logged with its request): reconnect with after_seq
BAD_REQUEST = 4400  # the first frame or a parameter is not valid
AUTH_FAILED = 4401  # no valid key or ticket, or the key may not read
NOT_FOUND = 4404  # no such run in the key's tenant
RESYNC = 4409  # after_seq is beyond the log: fetch the state over REST and start again
SLOW = 4429  # the client fell behind: reconnect with after_seq = the last seq received


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="event"):
    seq: int
    event_type: str
    event: msgspec.Raw


class Position(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="position"):
    seq: int  # everything up to here has been considered for this socket: resume with after_seq=seq


class End(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="end"):
    seq: int
    status: str


class Ready(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="ready"):
    after_seq: int
    head: int  # the log's last sequence when the socket opened
    recovered: bool  # False: events after `after_seq` were already removed by retention
    run_id: str | None = None


Frame = Ready | Event | Position | End
_encoder = msgspec.json.Encoder()


class _Tag(msgspec.Struct):
    type: str = ""


_tag = msgspec.json.Decoder(_Tag)


def event_type(data: bytes) -> str:
    """An encoded event's type tag, without decoding the rest."""
    return _tag.decode(data).type


class Encoded:
    """An event frame encoded once and sent as is to every socket that takes it."""

    __slots__ = ("_wire", "data", "event_type", "seq", "timed")

    def __init__(self, seq: int, event_type: str, data: bytes) -> None:
        self.seq, self.event_type, self.data = seq, event_type, data
        self._wire: bytes | None = None
        self.timed = False  # its relay lag is observed, once, by the first socket it goes out on

    @property
    def wire(self) -> bytes:
        """The whole WebSocket text frame as a server sends it (RFC 6455 §5.2: final, unmasked,
        uncompressed), built once for every socket it goes to."""
        if self._wire is None:
            size = len(self.data)
            if size < 126:
                head = bytes((0x81, size))
            elif size < 65_536:
                head = bytes((0x81, 126)) + size.to_bytes(2, "big")
            else:
                head = bytes((0x81, 127)) + size.to_bytes(8, "big")
            self._wire = head + self.data
        return self._wire


class Frames:
    """The encoded event frames of the latest records, keyed by stream sequence (unique in the log), so
    a record watched by N sockets is decoded and encoded once rather than N times.

    The hub hands a live record to all its sockets in one go, so a small cache serves them all; it is
    bounded in bytes too, so large events leave nothing much behind once their sockets have them.
    """

    def __init__(self, size: int = 1_024, max_bytes: int = 512 * 1_024) -> None:
        self._size, self._max_bytes = size, max_bytes
        self._frames: dict[int, Encoded] = {}
        self._bytes = 0

    def of(self, seq: int, data: bytes) -> Encoded | None:
        """The record's frame; None for a record that is not a JSON event (it is skipped, and logged)."""
        frame = self._frames.get(seq)
        if frame is None:
            try:
                kind = event_type(data)
            except msgspec.DecodeError as exc:
                log.warning("relay_record_unreadable", seq=seq, problem=str(exc))
                return None
            body = _encoder.encode(Event(seq=seq, event_type=kind, event=msgspec.Raw(data)))
            frame = self._frames[seq] = Encoded(seq, kind, body)
            self._bytes += len(body)
            while len(self._frames) > 1 and (len(self._frames) > self._size or self._bytes > self._max_bytes):
                oldest = self._frames.pop(next(iter(self._frames)))  # dicts keep insertion order
                self._bytes -= len(oldest.data)
        return frame

    @property
    def held(self) -> int:
        """Bytes of encoded frames kept."""
        return self._bytes


class Writes:
    """The sockets that took frames in this turn of the event loop, written out together by one
    callback at its end, instead of one scheduled callback per socket (a hub hands one record to every
    socket following its run in the same turn)."""

    def __init__(self) -> None:
        self._due: list[Pump] = []

    def due(self, pump: Pump) -> None:
        if not self._due:
            asyncio.get_running_loop().call_soon(self._write)
        self._due.append(pump)

    def _write(self) -> None:
        due, self._due = self._due, []
        for pump in due:
            pump.flush()


class Pump:
    """A socket's outgoing frames. An event frame offered while nothing is waiting to go out is written
    straight to the connection (the same bytes for every socket, no task switch); otherwise it queues
    behind the others for the writer task, which waits for the client to take them."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        metrics: Metrics,
        *,
        queue: int,
        every: float,
        transport: asyncio.Transport | None,
        writes: Writes,
    ) -> None:
        self._ws = ws
        self._writes = writes
        self._metrics = metrics
        # Direct writes need a connection without permessage-deflate, whose frames are the bytes as built.
        self._transport = transport if transport is not None and not ws.compress else None
        self._high = transport.get_write_buffer_limits()[1] if transport is not None else 0
        self._writing = False  # the writer task holds a frame it has not finished sending
        self._pending: list[bytes] = []  # frames to write at the end of this turn of the event loop
        self._pending_size = 0
        self._queue: asyncio.Queue[tuple[Frame | Encoded, datetime | None]] = asyncio.Queue(maxsize=queue)
        self._every = every
        self.considered = 0  # the last sequence the producer looked at (sent or filtered out)
        self.sent = 0  # the last sequence written to the socket
        self.overflowed = asyncio.Event()
        self.ending = False  # the end frame is queued
        self.finished = asyncio.Event()  # the end frame is sent

    def offer(self, frame: Frame | Encoded, stored_at: datetime | None = None) -> bool:
        """Send or queue a frame; False (and `overflowed` set) when the client is too far behind."""
        if type(frame) is Encoded and self._writable():
            wire = frame.wire
            if not self._pending:
                self._writes.due(self)
            self._pending.append(wire)
            self._pending_size += len(wire)
            self._sent(frame, stored_at)
            return True
        self.flush()  # what went before is written before this one
        try:
            self._queue.put_nowait((frame, stored_at))
        except asyncio.QueueFull:
            self.overflowed.set()
            return False
        return True

    def end(self, frame: End) -> None:
        """Queue the end frame: the last one this socket sends."""
        self.ending = self.offer(frame)

    def skip(self, seq: int) -> None:
        self.considered = seq

    def flush(self) -> None:
        """Write the frames taken in this turn of the event loop: the records of one batch from the log
        go out in one write (one system call per socket, not per event)."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _writable(self) -> bool:
        """Whether a frame may go straight out: nothing queued or being sent before it, the socket
        open, and the connection's buffer under its high-water mark (else the client is behind)."""
        transport = self._transport
        if transport is None or self._writing or self._queue.qsize() or transport.is_closing():
            return False
        return not self._ws.closed and transport.get_write_buffer_size() + self._pending_size < self._high

    def _sent(self, frame: Encoded, stored_at: datetime | None) -> None:
        self.sent = frame.seq
        self._metrics.frames_sent += 1
        if stored_at is not None and not frame.timed:  # once per event, not per socket: the same lag
            frame.timed = True
            self._metrics.relay_lag.observe(max(0.0, time.time() - stored_at.timestamp()))

    async def write(self) -> None:
        """Send queued frames until an `End` frame has gone out."""
        while True:
            frame, stored_at = await self._queue.get()
            self._writing = True
            if isinstance(frame, Encoded):
                await self._ws.send_frame(frame.data, WSMsgType.TEXT)
                self._sent(frame, stored_at)
            else:
                await self._ws.send_frame(_encoder.encode(frame), WSMsgType.TEXT)
            self._writing = False
            if isinstance(frame, End):
                self.finished.set()
                return

    async def tick(self) -> None:
        """A position frame every `every` seconds, so a quiet socket still has a resume point."""
        while True:
            await asyncio.sleep(self._every)
            self.offer(Position(seq=self.considered))
