"""The hash chain: every event names the SHA-256 of the previous event on its subject.

Verification walks records in stream order. Each record's own digest (recorded beside it by the writer)
must match its bytes, and each event's `prev_hash` must match the digest of the event before it on the
same subject, so one changed byte anywhere is found: in the record itself, or in the link after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

import msgspec

Problem = Literal["digest_mismatch", "chain_broken", "undecodable"]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One stored message as the verifier sees it."""

    seq: int
    subject: str
    data: bytes
    recorded_digest: str | None = None


class Break(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    subject: str
    problem: Problem
    expected: str | None = None
    actual: str | None = None


class Report(msgspec.Struct, frozen=True, kw_only=True):
    checked: int
    first_seq: int | None
    last_seq: int | None
    heads: dict[str, str]  # subject -> digest of its last event: anchor these to detect tail rewrites
    first_break: Break | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


class _Link(msgspec.Struct):
    prev_hash: str | None = None


_link_decoder = msgspec.json.Decoder(_Link)


class Verifier:
    """Incremental verification; `anchored` means the records start at the beginning of every subject."""

    def __init__(self, *, anchored: bool = True) -> None:
        self._anchored = anchored
        self._heads: dict[str, str] = {}
        self._checked = 0
        self._first: int | None = None
        self._last: int | None = None
        self._break: Break | None = None

    def add(self, entry: Entry) -> Break | None:
        """Check one record; return the problem it shows, the first of which is kept for the report."""
        self._checked += 1
        self._first = entry.seq if self._first is None else self._first
        self._last = entry.seq
        problem = self._check(entry)
        if problem is not None and self._break is None:
            self._break = problem
        return problem

    def _check(self, entry: Entry) -> Break | None:
        actual = digest(entry.data)
        if entry.recorded_digest is not None and entry.recorded_digest != actual:
            return Break(
                seq=entry.seq,
                subject=entry.subject,
                problem="digest_mismatch",
                expected=entry.recorded_digest,
                actual=actual,
            )
        if not _is_event(entry.subject):
            return None
        try:
            link = _link_decoder.decode(entry.data).prev_hash
        except msgspec.MsgspecError:
            return Break(seq=entry.seq, subject=entry.subject, problem="undecodable")
        previous = self._heads.get(entry.subject)
        self._heads[entry.subject] = actual
        if previous is None and not self._anchored:
            return None
        if link != previous:
            return Break(
                seq=entry.seq, subject=entry.subject, problem="chain_broken", expected=previous, actual=link
            )
        return None

    def report(self) -> Report:
        return Report(
            checked=self._checked,
            first_seq=self._first,
            last_seq=self._last,
            heads=dict(self._heads),
            first_break=self._break,
        )


def _is_event(subject: str) -> bool:
    """The kind is the third token: `swarm.<tenant>.evt...` (a tenant may itself be named `evt`)."""
    parts = subject.split(".", 3)
    return len(parts) > 2 and parts[2] == "evt"


def verify(entries: Iterable[Entry], *, anchored: bool = True) -> Report:
    verifier = Verifier(anchored=anchored)
    for entry in entries:
        verifier.add(entry)
    return verifier.report()
