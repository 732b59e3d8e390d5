"""The whole log, in order, over a connection of its own: what a projector reads.

An ordered push consumer without a subject filter (the server reads a filtered consumer of a stream with
many subjects several times slower, even when the filter matches every subject), flow control answered
only as the caller takes messages, and frames parsed by `bus._wire` instead of nats-py. The consumer is
recreated from the last sequence taken when a delivery is missed, heartbeats stop, or the connection
drops, so the caller sees every message once, in order, whatever happens underneath.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

import structlog

from bus._wire import Frame, Wire, WireError
from bus.record import DIGEST, Record
from bus.settings import ABANDONED_AFTER, Settings

_log = structlog.get_logger(__name__)

HEARTBEAT = 5.0  # seconds between the server's idle heartbeats
MAX_BUFFERED = 64 * 1_024 * 1_024  # bytes of bodies held before reading from the socket pauses
_STATUS = b"NATS/1.0 100"
_DIGEST = f"\r\n{DIGEST}:".encode()
_LAST_CONSUMER = b"\r\nNats-Last-Consumer:"
_STALLED = b"\r\nNats-Consumer-Stalled:"


class Replay:
    """Reads the stream from `after_seq + 1`; `open()` it, take `chunk()`s, then `close()` it."""

    def __init__(self, settings: Settings, after_seq: int, *, heartbeat: float = HEARTBEAT) -> None:
        self._settings = settings
        self._heartbeat = heartbeat
        self._last = after_seq  # the last stream sequence handed out
        self._consumer_seq = 0
        self._wire: Wire | None = None
        self._sid = b""
        self._name = ""
        self._pending = 0  # at creation: messages the consumer had to deliver
        self._stale = False  # a delivery was missed: the consumer must be recreated before reading on

    async def open(self) -> None:
        """Connect and create the consumer; raise `WireError` when that fails."""
        self._wire = await Wire.open(self._settings, name="swarm-replay", max_buffered=MAX_BUFFERED)
        await self._create()

    async def empty(self) -> bool:
        """Whether there was nothing after `after_seq` when the reader opened."""
        return self._pending == 0 and self._consumer_seq == 0

    async def chunk(self, most: int, *, stop_at_end: bool) -> tuple[list[Record], bool]:
        """At least one record (waiting for it), up to `most`; and whether that reached the end."""
        while True:
            records, ended = self._take(most, stop_at_end=stop_at_end)
            if records or ended:
                return records, ended
            await self._await_more()

    async def close(self) -> None:
        wire, self._wire = self._wire, None
        if wire is None:
            return
        try:
            self._drop_consumer(wire)
            await asyncio.wait_for(wire.flush(), 1.0)
        except (WireError, TimeoutError):
            pass  # the server drops an abandoned consumer by itself
        finally:
            wire.close()

    def _take(self, most: int, *, stop_at_end: bool) -> tuple[list[Record], bool]:
        wire = self._require_wire()
        protocol = wire.protocol
        frames = protocol.frames
        records: list[Record] = []
        if self._stale:
            return records, False
        expected = self._consumer_seq + 1
        taken, ended = 0, False
        while frames and len(records) < most:
            frame = frames.popleft()
            taken += len(frame[3])
            if frame[2].startswith(_STATUS):
                self._took(records, taken)  # a resync drops what is buffered, and resumes after the last
                taken = 0
                if not self._status(wire, frame):
                    break
                continue
            tokens = frame[1].split(b".")
            at = 5 if len(tokens) == 9 else 7  # $JS.ACK.[domain.account.]stream.consumer.delivered.<seq>...
            if int(tokens[at + 1]) != expected:
                self._took(records, taken)
                taken = 0
                self._resync(expected, int(tokens[at + 1]))
                break
            expected += 1
            records.append(_record(frame, int(tokens[at]), int(tokens[at + 2])))
            if stop_at_end and tokens[at + 3] == b"0":
                ended = True
                break
        self._took(records, taken)
        self._consumer_seq = expected - 1
        if ended:
            return records, True
        if stop_at_end and not records and self._pending == 0 and self._consumer_seq == 0:
            return records, True
        return records, False

    def _took(self, records: list[Record], size: int) -> None:
        """Account for what was taken from the connection: `size` bytes of bodies, up to `records`' last."""
        self._require_wire().protocol.taken(size)
        if records:
            self._last = records[-1].seq

    def _status(self, wire: Wire, frame: Frame) -> bool:
        """Answer a flow-control request or heartbeat; False when it shows a delivery was missed."""
        _, reply, header, _ = frame
        if reply:  # a flow-control request: everything before it has been taken
            wire.publish(reply)
            return True
        stalled = _header(header, _STALLED)
        if stalled:
            wire.publish(stalled.encode())
        last = _header(header, _LAST_CONSUMER)
        if last and int(last) > self._consumer_seq:
            self._resync(self._consumer_seq + 1, int(last))
            return False
        return True

    def _resync(self, expected: int, found: int) -> None:
        _log.warning("log_replay_resync", expected_delivery=expected, found=found, after_seq=self._last)
        wire = self._require_wire()
        self._drop_consumer(wire)  # its frames still on the way are dropped on arrival
        wire.protocol.discard()
        self._stale = True

    async def _await_more(self) -> None:
        wire = self._require_wire()
        if wire.protocol.lost is not None:
            await self._reconnect()
            return
        if self._stale:
            await self._recreate()
            return
        try:
            async with asyncio.timeout(3 * self._heartbeat):
                await wire.protocol.wait()
        except TimeoutError:
            _log.warning("log_replay_heartbeats_missed", after_seq=self._last)
            await self._recreate()
            return
        if wire.protocol.lost is not None:
            await self._reconnect()

    async def _recreate(self) -> None:
        wire = self._require_wire()
        try:
            self._drop_consumer(wire)
            await self._create()
        except (WireError, TimeoutError) as exc:
            _log.warning("log_replay_consumer_failed", error=str(exc), after_seq=self._last)
            await self._reconnect()

    async def _reconnect(self) -> None:
        """A new connection and consumer from the last sequence taken, retried until it works."""
        while True:
            if self._wire is not None:
                self._wire.close()
            try:
                await self.open()
            except (WireError, TimeoutError, OSError) as exc:
                _log.warning("log_replay_reconnecting", error=str(exc), after_seq=self._last)
                await asyncio.sleep(0.5)
            else:
                return

    async def _create(self) -> None:
        wire = self._require_wire()
        inbox, self._sid = wire.subscribe()
        self._name = "replay_" + secrets.token_hex(8)
        stream = self._settings.stream
        config = {
            "name": self._name, "deliver_subject": inbox.decode(), "deliver_policy": "by_start_sequence",
            "opt_start_seq": self._last + 1, "ack_policy": "none", "max_deliver": 1, "flow_control": True,
            "idle_heartbeat": int(self._heartbeat * 1e9), "mem_storage": True, "num_replicas": 1,
            "inactive_threshold": int(ABANDONED_AFTER * 1e9),
        }  # fmt: skip
        async with asyncio.timeout(self._settings.connect_timeout):
            answer = await wire.request(
                f"$JS.API.CONSUMER.CREATE.{stream}.{self._name}", {"stream_name": stream, "config": config}
            )
        if "error" in answer:
            raise WireError(f"creating a consumer on {stream}: {answer['error'].get('description', answer)}")
        self._consumer_seq = 0
        self._pending = int(answer.get("num_pending", 0))
        self._stale = False

    def _drop_consumer(self, wire: Wire) -> None:
        if self._sid:
            wire.unsubscribe(self._sid)
        if self._name:
            subject = f"$JS.API.CONSUMER.DELETE.{self._settings.stream}.{self._name}"
            wire.publish(subject.encode(), b"", b"_INBOX." + secrets.token_hex(8).encode())
        self._sid, self._name = b"", ""

    def _require_wire(self) -> Wire:
        if self._wire is None:
            raise WireError("the replay is closed")
        return self._wire


def _record(frame: Frame, seq: int, nanos: int) -> Record:
    return Record(
        seq=seq,
        subject=frame[0].decode(),
        data=frame[3],
        digest=_header(frame[2], _DIGEST),
        time=datetime.fromtimestamp(nanos / 1e9, UTC),
    )


def _header(block: bytes, name: bytes) -> str | None:
    """One header's value from a raw header block (`name` with its leading CRLF and colon)."""
    at = block.find(name)
    if at < 0:
        return None
    start = at + len(name)
    return block[start : block.find(b"\r\n", start)].strip().decode()
