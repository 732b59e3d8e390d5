"""`decode_stored` reads every message as `decode` does, minus the id patterns only."""

from __future__ import annotations

import gc
import json
from typing import Any

import msgspec
import pytest

import schemas
from schemas import InvalidMessage, UnknownMessageType, decode_stored
from tests.schemas.test_codec import ALL_CLASSES, INVALID_CASES, as_dict, sample

PATTERN_PATHS = {"$.run_id", "$.project_id", "$.tenant", "$.actor", "$.prev_hash", "$.causation_id"}


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_type_decodes_to_its_type_with_the_same_fields_and_bytes(cls: type) -> None:
    """Each message decodes to an instance of its own type, with the same fields in the same order,
    re-encoding to the same bytes as `decode`'s value."""
    data = schemas.encode(sample(cls))
    stored = decode_stored(data)
    assert isinstance(stored, cls)
    assert type(stored).__struct_config__.tag == cls.__struct_config__.tag
    assert [f.name for f in msgspec.structs.fields(stored)] == [f.name for f in msgspec.structs.fields(cls)]
    assert msgspec.to_builtins(stored) == msgspec.to_builtins(sample(cls))
    assert schemas.encode(stored) == data
    assert not gc.is_tracked(stored)  # a batch makes thousands: the collector need not walk them


@pytest.mark.parametrize(("cls", "change", "path"), INVALID_CASES, ids=lambda v: getattr(v, "__name__", None))
def test_every_constraint_but_the_patterns_still_holds(cls: type, change: dict[str, Any], path: str) -> None:
    """A broken constraint raises `InvalidMessage` as with `decode`, unless it is an id's pattern."""
    data = json.dumps({**as_dict(cls), **change})
    if path in PATTERN_PATHS:
        assert isinstance(decode_stored(data), cls)
    else:
        with pytest.raises(InvalidMessage) as caught:
            decode_stored(data)
        assert path in caught.value.detail


def test_unknown_types_and_garbage_fail_as_with_decode() -> None:
    """A newer type is `UnknownMessageType`; bytes that are not a message are `InvalidMessage`."""
    with pytest.raises(UnknownMessageType):
        decode_stored(b'{"type": "run.newer_thing"}')
    for data in (b"", b"not json", b'{"type": "run.start"}'):
        with pytest.raises(InvalidMessage):
            decode_stored(data)


def test_the_patterns_left_out_are_covered_by_the_cases() -> None:
    """The pattern cases above are the ones `decode` rejects by pattern (so the split is not vacuous)."""
    assert {path for _, _, path in INVALID_CASES} >= PATTERN_PATHS
