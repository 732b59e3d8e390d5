"""Cancelling a task that waits on NATS ends it, whatever moment the cancellation lands.

On Python 3.11 nats-py's requests could drop a cancellation that arrived with the reply; a shutting-down
role then hung on its next wait (found as a gateway teardown that never ended).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

import bus
from bus._cancellation import wait_for
from tests.bus._waits import eventually

ROUNDS = 200


async def _cancel_at_random(work: Callable[[], Awaitable[object]], seed: int) -> list[int]:
    """Start `work` ROUNDS times, cancel each at a random moment; return the rounds that did not end."""
    rng = random.Random(seed)
    kept_going: list[int] = []
    for round_ in range(ROUNDS):
        task = asyncio.ensure_future(work())
        await asyncio.sleep(rng.random() * 0.004)
        if not task.cancel():  # already finished: nothing to test this round
            continue
        done, _ = await asyncio.wait({task}, timeout=2)
        if not done or not task.cancelled():
            kept_going.append(round_)
            task.cancel()
    return kept_going


async def test_cancelled_requests_end_cancelled(conn: bus.Connection) -> None:
    """A JetStream request cancelled as its reply arrives raises CancelledError instead of returning."""
    assert await _cancel_at_random(conn.log.end, seed=1) == []


async def test_a_cancelled_reader_never_goes_on_to_follow(conn: bus.Connection) -> None:
    """Read to the end and then follow (a key cache's loop): a cancellation during the read ends it."""

    async def read_then_follow() -> None:
        async for _ in conn.log.read("tenant.>"):
            pass
        async for _ in conn.log.follow("tenant.>"):
            pass

    assert await _cancel_at_random(read_then_follow, seed=2) == []


async def test_readers_leave_no_consumer_behind(conn: bus.Connection) -> None:
    """Every reader deletes its consumer, including one cancelled while nats-py was creating it: the
    server keeps none (it used to keep each for a minute, and refused new ones past about a thousand)."""

    async def consumers() -> int:
        info = await conn.js.stream_info(conn.settings.stream)
        return int(info.state.consumer_count)

    async def follow() -> None:
        async for _ in conn.log.follow("tenant.>"):
            pass

    for _ in range(50):
        assert [r async for r in conn.log.read("tenant.>")] == []
    assert await _cancel_at_random(follow, seed=3) == []

    async def none_left() -> bool:
        return await consumers() == 0

    await eventually(none_left, within=3)


async def test_wait_for_keeps_the_timeouts_meaning() -> None:
    """The replacement still times out, passes results through, and treats a zero timeout as 'now'."""
    assert await wait_for(asyncio.sleep(0, "done"), 1) == "done"
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.sleep(1), 0.01)
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.sleep(1), 0)
    finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    finished.set_result("ready")
    assert await wait_for(finished, 0) == "ready"
