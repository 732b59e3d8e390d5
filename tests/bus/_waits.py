"""Waiting on conditions with deadlines (never fixed sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
Check = Callable[[], Awaitable[bool]]


async def collect(records: AsyncIterable[T], within: float = 10.0) -> list[T]:
    """Every item of a finite async iterator, failing if it does not end within `within` seconds."""
    async with asyncio.timeout(within):
        return [record async for record in records]


async def eventually(check: Check, *, within: float = 10.0, every: float = 0.05) -> None:
    """Wait until `check()` holds; fail with TimeoutError at the deadline."""
    async with asyncio.timeout(within):
        # Polls server state (consumer info, stream state), which offers nothing to wait on.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(every)


async def holds_for(check: Check, seconds: float, *, every: float = 0.1) -> None:
    """Assert `check()` keeps holding for `seconds`: for what must not happen, such as a redelivery."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        assert await check()
        await asyncio.sleep(every)
    assert await check()
