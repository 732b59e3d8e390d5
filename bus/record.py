"""A stored message as read back from the log."""

from __future__ import annotations

from datetime import datetime

import msgspec

from schemas.chain import Entry

DIGEST = "Swarm-Sha256"  # the header carrying the SHA-256 of a message's body


class Record(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One stored message, as read back from the stream (plain values: never in a reference cycle, so
    not tracked by the garbage collector)."""

    seq: int
    subject: str
    data: bytes
    digest: str | None = None
    time: datetime | None = None

    def entry(self) -> Entry:
        return Entry(seq=self.seq, subject=self.subject, data=self.data, recorded_digest=self.digest)
