"""Sortable unique ids: a readable kind prefix plus a ULID (48-bit millisecond time, 80 random bits).

Ids sort by creation time as plain strings, are safe as NATS subject tokens and are validated at decode
time through the aliases in `schemas.types`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from enum import StrEnum

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, no I L O U
ULID_PATTERN = "[0-9A-HJKMNP-TV-Z]{26}"


class Kind(StrEnum):
    """The prefix of each kind of id."""

    RUN = "run"
    PROJECT = "prj"
    PATTERN = "pat"
    EVENT = "evt"
    COMMAND = "cmd"
    KEY = "key"
    EXECUTOR = "exe"


def ulid(millis: int, entropy: bytes) -> str:
    """Encode a 48-bit timestamp and 10 bytes of entropy as a 26-character ULID."""
    if len(entropy) != 10:
        raise ValueError("a ULID needs exactly 10 bytes of entropy")
    value = (millis & ((1 << 48) - 1)) << 80 | int.from_bytes(entropy, "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def ulid_millis(value: str) -> int:
    """The creation time, in Unix milliseconds, of a ULID or prefixed id."""
    body = value.rsplit("_", 1)[-1][:10]
    millis = 0
    for char in body:
        millis = millis * 32 + _ALPHABET.index(char)
    return millis


class IdSource:
    """Makes ids from an injectable clock and entropy source (real ones by default)."""

    def __init__(
        self,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._clock_ms = clock_ms
        self._entropy = entropy

    def new(self, kind: Kind) -> str:
        return f"{kind}_{ulid(self._clock_ms(), self._entropy(10))}"
