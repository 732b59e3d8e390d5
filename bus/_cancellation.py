"""Cancellation that holds inside nats-py on Python 3.11.

nats-py waits for every request (publish acknowledgements, consumer creation, fetches, stream info) with
`asyncio.wait_for`. On 3.11 that function returns the result, and drops the cancellation, when the
task is cancelled at the moment the awaited reply arrives (gh-86296; 3.12 rewrote it on
`asyncio.timeout`). A role shutting down then cancels a task that carries on, and the next wait without
a timeout (a log follow, say) never ends. `install` gives nats-py's modules the 3.12 behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import types
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

_MODULES = (
    "nats.aio.client",
    "nats.aio.subscription",
    "nats.aio.transport",
    "nats.js.client",
    "nats.js.kv",
    "nats.js.object_store",
)


async def wait_for(awaitable: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109 (its signature)
    """`asyncio.wait_for` as Python 3.12 defines it: a cancellation is never turned into a result."""
    if timeout is not None and timeout <= 0:
        future = asyncio.ensure_future(awaitable)
        if not future.done():
            future.cancel()
            await asyncio.wait({future})
        try:
            return future.result()
        except asyncio.CancelledError as exc:
            raise TimeoutError from exc
    async with asyncio.timeout(timeout):
        return await awaitable


class _Asyncio(types.ModuleType):
    """The `asyncio` module as nats-py sees it: everything as is, but `wait_for`."""

    wait_for = staticmethod(wait_for)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def install() -> None:
    """Point nats-py's modules at the fixed `wait_for` (a no-op from Python 3.12 on)."""
    if sys.version_info >= (3, 12):
        return
    shim = _Asyncio("asyncio")
    for name in _MODULES:
        with contextlib.suppress(ImportError):
            module = importlib.import_module(name)
            if getattr(module, "asyncio", None) is asyncio:
                module.asyncio = shim  # type: ignore[attr-defined]
