"""Long-running roles move what start-up allocated out of the garbage collector's view."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from swarm.roles import settle_heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_settle_heap_freezes_what_is_alive(unfrozen: None) -> None:
    kept = [[n] for n in range(1_000)]  # container objects the collector tracks
    assert gc.get_freeze_count() == 0
    settle_heap()
    assert gc.get_freeze_count() >= len(kept)
    assert all(gc.is_tracked(item) for item in kept)
