"""Ids are prefixed ULIDs that sort by time, come from an injectable source and are checked on decode."""

from __future__ import annotations

import json
import random
import re
import time
from datetime import UTC, datetime

import pytest

import schemas
from schemas import IdSource, InvalidMessage, Kind, StartRun, ulid, ulid_millis
from schemas.ids import ULID_PATTERN

MILLIS = 1_740_000_000_000


def seeded(seed: int, millis: int = MILLIS) -> IdSource:
    return IdSource(clock_ms=lambda: millis, entropy=random.Random(seed).randbytes)


def test_ulids_sort_by_time_whatever_their_entropy() -> None:
    """A ULID made later sorts after an earlier one, even with maximal entropy on the earlier one."""
    rng = random.Random(3)
    times = sorted(rng.sample(range(2**48), 200))
    made = [ulid(millis, rng.randbytes(10)) for millis in times]
    assert sorted(made) == made
    assert ulid(MILLIS, b"\xff" * 10) < ulid(MILLIS + 1, b"\x00" * 10)


def test_prefixed_ids_sort_by_time() -> None:
    """Ids of one kind sort by creation time as plain strings."""
    clock = iter(range(MILLIS, MILLIS + 50_000, 997))
    ids = IdSource(clock_ms=lambda: next(clock), entropy=random.Random(9).randbytes)
    made = [ids.new(Kind.RUN) for _ in range(50)]
    assert sorted(made) == made


@pytest.mark.parametrize("millis", [0, 1, MILLIS, 2**48 - 1])
def test_ulid_millis_round_trips(millis: int) -> None:
    """The timestamp encoded in a ULID, bare or prefixed, is read back exactly."""
    value = ulid(millis, random.Random(millis).randbytes(10))
    assert ulid_millis(value) == millis
    assert ulid_millis(f"run_{value}") == millis


def test_ulid_is_26_crockford_characters() -> None:
    """A ULID is 26 characters of Crockford base32 with the first character at most 7 (48-bit time)."""
    value = ulid(2**48 - 1, b"\xff" * 10)
    assert re.fullmatch(ULID_PATTERN, value)
    assert value == "7" + "Z" * 25
    assert ulid(0, b"\x00" * 10) == "0" * 26


@pytest.mark.parametrize("size", [0, 9, 11])
def test_ulid_needs_ten_bytes_of_entropy(size: int) -> None:
    """Entropy of any other length than 10 bytes is refused."""
    with pytest.raises(ValueError, match="10 bytes"):
        ulid(MILLIS, b"\x00" * size)


@pytest.mark.parametrize("kind", list(Kind))
def test_each_kind_has_its_prefix(kind: Kind) -> None:
    """An id of each kind is `<prefix>_<ULID>` with that kind's prefix."""
    value = seeded(1).new(kind)
    assert re.fullmatch(f"{kind.value}_{ULID_PATTERN}", value)


def test_kind_prefixes_are_stable() -> None:
    """The prefixes are part of the stored format and never change."""
    assert {kind.name: kind.value for kind in Kind} == {
        "RUN": "run",
        "PROJECT": "prj",
        "PATTERN": "pat",
        "EVENT": "evt",
        "COMMAND": "cmd",
        "KEY": "key",
        "EXECUTOR": "exe",
    }


def test_seeded_source_is_deterministic() -> None:
    """Two sources with the same clock and seed make the same ids; another seed makes other ids."""
    first, second, other = seeded(7), seeded(7), seeded(8)
    made = [first.new(Kind.RUN) for _ in range(5)]
    assert made == [second.new(Kind.RUN) for _ in range(5)]
    assert not set(made) & {other.new(Kind.RUN) for _ in range(5)}
    assert len(set(made)) == 5


def test_source_uses_its_clock() -> None:
    """The time inside an id is the injected clock's reading."""
    assert ulid_millis(seeded(1, millis=123_456_789).new(Kind.EVENT)) == 123_456_789


def test_default_source_uses_the_real_clock() -> None:
    """Without injection, ids carry the current time and are random."""
    before = time.time_ns() // 1_000_000
    made = IdSource().new(Kind.RUN)
    after = time.time_ns() // 1_000_000
    assert before <= ulid_millis(made) <= after
    assert made != IdSource().new(Kind.RUN)


def _start_run(run_id: str) -> bytes:
    ids = seeded(5)
    command = StartRun(
        id=ids.new(Kind.COMMAND),
        at=datetime(2025, 1, 1, tzinfo=UTC),
        tenant="acme",
        actor="key_test",
        run_id=ids.new(Kind.RUN),
        project_id=ids.new(Kind.PROJECT),
        instructions="go",
    )
    return json.dumps({**json.loads(schemas.encode(command)), "run_id": run_id}).encode()


GOOD = seeded(11).new(Kind.RUN)


def test_a_valid_id_decodes() -> None:
    """A well-formed run id is accepted where a run id is expected."""
    decoded = schemas.decode(_start_run(GOOD))
    assert isinstance(decoded, StartRun)
    assert decoded.run_id == GOOD


@pytest.mark.parametrize(
    "bad",
    [
        "prj_" + GOOD[4:],
        "RUN_" + GOOD[4:],
        GOOD.lower(),
        GOOD[:-1],
        GOOD + "0",
        GOOD[4:],
        "run-" + GOOD[4:],
        GOOD[:-1] + "U",
        GOOD[:-1] + "I",
        f" {GOOD}",
    ],
    ids=[
        "other-prefix",
        "upper-prefix",
        "lower-case",
        "short",
        "long",
        "bare",
        "dash",
        "letter-U",
        "letter-I",
        "space",
    ],
)
def test_malformed_ids_are_rejected_at_decode(bad: str) -> None:
    """A run id with another prefix, lower case, a wrong length or a non-Crockford letter is invalid."""
    with pytest.raises(InvalidMessage, match=r"\$\.run_id"):
        schemas.decode(_start_run(bad))
