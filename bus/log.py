"""The log: append events to an aggregate with optimistic concurrency, send commands, read in order."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterable
from typing import Any

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus._piped import Piped
from bus._pipeline import Ack, Pipeline
from bus._reader import Ordered, Reader
from bus._replay import Replay
from bus.errors import ConcurrencyConflict, PayloadTooLarge
from bus.record import DIGEST, Record
from bus.settings import Settings
from schemas import AnyCommand, AnyEvent, encode, subjects
from schemas.chain import digest

_log = structlog.get_logger(__name__)

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
WHOLE_LOG = f"{subjects.ROOT}.>"


class Position(msgspec.Struct, frozen=True):
    """Where an aggregate stands: its last stream sequence (0 when empty) and that event's digest."""

    seq: int = 0
    digest: str | None = None


START = Position()


class Log:
    """The `SWARM` stream as the rest of the system sees it."""

    def __init__(self, js: JetStreamContext, pipeline: Pipeline, settings: Settings) -> None:
        self._js = js
        self._pipeline = pipeline
        self._settings = settings

    async def append(self, event: AnyEvent, at: Position) -> Position:
        """Append one event to its aggregate, which must still be at `at`; return the new position.

        Fills in `prev_hash` from `at`, so the aggregate's events form a hash chain. Raises
        `ConcurrencyConflict` when another writer appended first.
        """
        chained = msgspec.structs.replace(event, prev_hash=at.digest)
        data = encode(chained)
        sha = digest(data)
        headers = {MSG_ID: event.id, EXPECTED_LAST_SUBJECT_SEQ: str(at.seq), DIGEST: sha}
        subject = subjects.of_event(event)
        try:
            ack = await self._publish(subject, data, headers)
        except ConcurrencyConflict:
            # A standalone nats-server checks the expected sequence before the Nats-Msg-Id window, so
            # the retry of an append whose ack was lost looks like a conflict; it is not if ours is last.
            last = await self.position(subject)
            if last.digest != sha:
                raise
            return last
        return Position(seq=ack.seq, digest=sha)

    async def append_all(self, events: Iterable[AnyEvent], at: Position) -> Position:
        for event in events:
            at = await self.append(event, at)
        return at

    async def send(self, command: AnyCommand, *, idempotency_key: str | None = None) -> Ack:
        """Publish a command; the same idempotency key (default: the command id) is stored once."""
        data = encode(command)
        headers = {MSG_ID: idempotency_key or command.id, DIGEST: digest(data)}
        return await self._publish(subjects.of_command(command), data, headers)

    def _publish(self, subject: str, data: bytes, headers: dict[str, str]) -> Coroutine[Any, Any, Ack]:
        # A plain function handing back the pipeline's coroutine: one coroutine object less per publish.
        size = len(data) + _header_bytes(headers)
        if size > self._settings.max_message_bytes:
            raise PayloadTooLarge(subject, size, self._settings.max_message_bytes)
        return self._pipeline.publish(subject, data, headers)

    async def position(self, subject: str) -> Position:
        """The last event of one subject (an aggregate), or `START` when it has none."""
        last = await self.last(subject)
        return START if last is None else Position(seq=last.seq, digest=digest(last.data))

    async def end(self) -> int:
        """The stream's last sequence: `follow(after_seq=end())` sees only what comes after now."""
        info = await self._js.stream_info(self._settings.stream)
        return info.state.last_seq

    async def last(self, subject: str) -> Record | None:
        """The last message on one subject (no wildcards), or `None` when there is none."""
        try:
            raw = await self._js.get_last_msg(self._settings.stream, subject, direct=True)
        except NotFoundError:
            return None
        headers = raw.headers or {}
        return Record(
            seq=raw.seq or 0, subject=raw.subject or subject, data=raw.data or b"", digest=headers.get(DIGEST)
        )

    async def get(self, seq: int) -> Record | None:
        """The message at one stream sequence, or `None` when there is none (never written, or aged out)."""
        try:
            raw = await self._js.get_msg(self._settings.stream, seq=seq, direct=True)
        except NotFoundError:
            return None
        headers = raw.headers or {}
        return Record(
            seq=raw.seq or seq, subject=raw.subject or "", data=raw.data or b"", digest=headers.get(DIGEST)
        )

    async def first(self) -> int:
        """The stream's first sequence still stored (retention may have removed older ones)."""
        info = await self._js.stream_info(self._settings.stream)
        return info.state.first_seq

    async def read(
        self, subject: str = ">", *, after_seq: int = 0, limit: int | None = None
    ) -> AsyncIterator[Record]:
        """Messages on `subject` (wildcards allowed) after `after_seq`, in order, up to the current end.

        Streams through an ordered consumer: memory stays bounded however long the log is. `limit`
        stops after that many records (the caller pages on with the last record's `seq`).
        """
        if limit is not None and limit <= 0:
            return
        seen = 0
        async for batch in self.batches(subject, after_seq=after_seq, follow=False):
            for record in batch:
                yield record
                seen += 1
                if seen == limit:
                    return

    async def follow(self, subject: str = ">", *, after_seq: int = 0) -> AsyncIterator[Record]:
        """Like `read`, but never ends: after the current end it yields new messages as they arrive."""
        async for batch in self.batches(subject, after_seq=after_seq, follow=True):
            for record in batch:
                yield record

    async def batches(
        self,
        subject: str = ">",
        *,
        after_seq: int = 0,
        max_batch: int = 1_000,
        follow: bool = True,
        in_child: bool = False,
    ) -> AsyncGenerator[list[Record]]:
        """The messages after `after_seq` in order, in lists of at most `max_batch`.

        With `in_child`, the whole log is read by a child process (`bus._piped`), so that reading it
        leaves this process's interpreter to the caller (a projector folds while the child reads).

        A list holds whatever has arrived since the last one, so a consumer that keeps up gets small
        lists with little delay and one that falls behind gets full ones. Messages are taken from the
        subscription only as the caller asks for them: that is what paces JetStream's flow control
        (a callback subscription would acknowledge flow control on arrival, and a slow reader would
        overflow the client's buffer and silently lose messages).
        """
        reader = self._reader(_qualified(subject), after_seq, max_batch, follow=follow, in_child=in_child)
        try:
            await reader.open()
            if not follow and await reader.empty():
                return
            ended, last = False, after_seq
            while not ended:
                chunk, ended = await reader.chunk(max_batch, stop_at_end=not follow)
                if chunk and chunk[0].seq <= last:  # redelivered when the consumer was recreated
                    _log.warning("log_redelivery_dropped", subject=subject, up_to=last, first=chunk[0].seq)
                    chunk = [record for record in chunk if record.seq > last]
                if chunk:
                    last = chunk[-1].seq
                    yield chunk
        finally:
            await reader.close()

    def _reader(self, subject: str, after_seq: int, most: int, *, follow: bool, in_child: bool) -> Reader:
        """The whole log goes through a connection of its own (`Replay`, several times faster) where
        that connection can authenticate, in a child process when asked; everything else through
        nats-py's ordered consumer."""
        settings = self._settings
        if subject == WHOLE_LOG and settings.creds_file is None and "tls://" not in settings.url:
            if in_child:
                return Piped(settings, after_seq, most=most, stop_at_end=not follow)
            return Replay(settings, after_seq)
        # The server reads a filter of every subject several times slower than no filter (">").
        return Ordered(self._js, settings.stream, ">" if subject == WHOLE_LOG else subject, after_seq)


def _header_bytes(headers: dict[str, str]) -> int:
    """The header block's size: the stream's `max_msg_size` counts it with the body."""
    size = 12  # "NATS/1.0\r\n" and the closing "\r\n"
    for key, value in headers.items():
        size += len(key) + len(value) + 4
    return size


def _qualified(subject: str) -> str:
    return subject if subject.startswith(f"{subjects.ROOT}.") else f"{subjects.ROOT}.{subject}"
