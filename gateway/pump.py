"""One WebSocket's outgoing side: a bounded queue of frames, a writer, position frames, and the close.

The producer (`offer`) never waits: when the client has fallen `queue` frames behind, the socket is
closed with `SLOW` and the last sequence it was sent, so memory per socket stays bounded and the client
can resume from exactly there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import msgspec
import structlog
from aiohttp import WSMsgType, web

from bus import Record
from gateway.metrics import Histogram, Metrics

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

TERMINAL = frozenset({"run.succeeded", "run.failed", "run.cancelled", "run.timed_out"})  # a run's last events


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

    __slots__ = ("_head", "event_type", "seq", "wire")

    def __init__(self, seq: int, event_type: str, data: bytes) -> None:
        self.seq, self.event_type = seq, event_type
        head = _head(len(data))
        self._head = len(head)
        self.wire = head + data  # the whole frame, built once for every socket it goes to

    @property
    def data(self) -> bytes:
        """The frame's payload (a copy: for the writer task's path, which frames it again)."""
        return self.wire[self._head :]


def _head(size: int) -> bytes:
    """A WebSocket text frame's header as a server sends it (RFC 6455 §5.2: final, unmasked,
    uncompressed)."""
    if size < 126:
        return bytes((0x81, size))
    if size < 65_536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big")
    return bytes((0x81, 127)) + size.to_bytes(8, "big")


class Frames:
    """The encoded event frames of the latest records, keyed by stream sequence (unique in the log), so
    a record watched by N sockets is decoded and encoded once rather than N times.

    The hub hands a batch of records to all its sockets in one go, so a small cache serves them all; it
    is bounded in bytes too, so large events leave nothing much behind once their sockets have them.
    Each new frame observes its relay lag (log storage to the frame built for its first socket): once
    per event, the same for every socket.
    """

    def __init__(self, lag: Histogram, size: int = 1_024, max_bytes: int = 512 * 1_024) -> None:
        self._lag = lag
        self._size, self._max_bytes = size, max_bytes
        self._frames: dict[int, Encoded] = {}
        self._bytes = 0
        self._batch: Sequence[Record] = ()  # the last batch given to `events`, and what it gave
        self._events: tuple[list[Encoded], Encoded | None] = ([], None)

    def of(self, record: Record) -> Encoded | None:
        """The record's frame; None for a record that is not a JSON event (it is skipped, and logged)."""
        frame = self._frames.get(record.seq)
        if frame is None:
            try:
                kind = event_type(record.data)
            except msgspec.DecodeError as exc:
                log.warning("relay_record_unreadable", seq=record.seq, problem=str(exc))
                return None
            body = _encoder.encode(Event(seq=record.seq, event_type=kind, event=msgspec.Raw(record.data)))
            frame = self._frames[record.seq] = Encoded(record.seq, kind, body)
            if record.time is not None:
                self._lag.observe(max(0.0, time.time() - record.time.timestamp()))
            self._bytes += len(frame.wire)
            while len(self._frames) > 1 and (len(self._frames) > self._size or self._bytes > self._max_bytes):
                oldest = self._frames.pop(next(iter(self._frames)))  # dicts keep insertion order
                self._bytes -= len(oldest.wire)
        return frame

    def events(self, records: Sequence[Record]) -> tuple[list[Encoded], Encoded | None]:
        """The frames of a batch's event records in order, and the first that ends a run (or None).
        Built for the first socket given this batch object, then the same for the others: a hub gives
        one batch to all its sockets in one turn of the event loop, at whose end it is forgotten."""
        if records is not self._batch:
            if not self._batch:
                asyncio.get_running_loop().call_soon(self._forget)
            events = [frame for record in records if (frame := self.of(record)) is not None]
            self._events = events, next((frame for frame in events if frame.event_type in TERMINAL), None)
            self._batch = records
        return self._events

    def _forget(self) -> None:
        self._batch, self._events = (), ([], None)

    @property
    def held(self) -> int:
        """Bytes of encoded frames kept."""
        return self._bytes


class Pump:
    """A socket's outgoing frames. Event frames offered while nothing is waiting to go out are written
    straight to the connection (the same bytes for every socket, no task switch); otherwise they queue
    behind the others for the writer task, which waits for the client to take them."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        metrics: Metrics,
        *,
        queue: int,
        every: float,
        transport: asyncio.Transport | None,
    ) -> None:
        self._ws = ws
        self._metrics = metrics
        # Direct writes need a connection without permessage-deflate, whose frames are the bytes as built.
        self._transport = transport if transport is not None and not ws.compress else None
        self._high = transport.get_write_buffer_limits()[1] if transport is not None else 0
        self._backlog = 0  # frames queued for the writer task or being sent by it
        self._queue: asyncio.Queue[Frame | Encoded] = asyncio.Queue(maxsize=queue)
        self._every = every
        self.considered = 0  # the last sequence the producer looked at (sent or filtered out)
        self.sent = 0  # the last sequence written to the socket
        self.overflowed = asyncio.Event()
        self.ending = False  # the end frame is queued
        self.finished = asyncio.Event()  # the end frame is sent

    def offer(self, frame: Frame | Encoded) -> bool:
        """Send or queue a frame; False (and `overflowed` set) when the client is too far behind."""
        if type(frame) is Encoded:
            return self.offer_events((frame,))
        return self._enqueue(frame)

    def offer_events(self, frames: Sequence[Encoded]) -> bool:
        """Send or queue event frames in order. They go straight out, in one write, when nothing is
        queued or being sent before them, the socket is open, and the connection's buffer is under its
        high-water mark (else the client is behind); one batch from the log costs one system call."""
        transport = self._transport
        if (
            transport is None
            or self._backlog
            or transport.is_closing()
            or self._ws.closed
            or transport.get_write_buffer_size() >= self._high
        ):
            return all(self._enqueue(frame) for frame in frames)
        if len(frames) > 1:
            return all(self._enqueue(frame) for frame in self._write_some(transport, frames))
        transport.write(frames[0].wire)
        self._metrics.frames_sent += 1
        self.sent = frames[0].seq
        return True

    def _write_some(self, transport: asyncio.Transport, frames: Sequence[Encoded]) -> Sequence[Encoded]:
        """Write frames in one go up to the one that takes the buffer past its high-water mark (so
        a long replay does not land in memory at once); the rest, to queue."""
        room, size, taken = self._high - transport.get_write_buffer_size(), 0, 0
        while taken < len(frames) and size < room:
            size += len(frames[taken].wire)
            taken += 1
        transport.write(b"".join([frame.wire for frame in frames[:taken]]))
        self._metrics.frames_sent += taken
        self.sent = frames[taken - 1].seq
        return frames[taken:]

    def end(self, frame: End) -> None:
        """Queue the end frame: the last one this socket sends."""
        self.ending = self.offer(frame)

    def skip(self, seq: int) -> None:
        self.considered = seq

    def _enqueue(self, frame: Frame | Encoded) -> bool:
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed.set()
            return False
        self._backlog += 1
        return True

    async def write(self) -> None:
        """Send queued frames until an `End` frame has gone out."""
        while True:
            frame = await self._queue.get()
            if isinstance(frame, Encoded):
                await self._ws.send_frame(frame.data, WSMsgType.TEXT)
                self.sent = frame.seq
                self._metrics.frames_sent += 1
            else:
                await self._ws.send_frame(_encoder.encode(frame), WSMsgType.TEXT)
            self._backlog -= 1
            if isinstance(frame, End):
                self.finished.set()
                return

    async def tick(self) -> None:
        """A position frame every `every` seconds, so a quiet socket still has a resume point."""
        while True:
            await asyncio.sleep(self._every)
            self.offer(Position(seq=self.considered))
