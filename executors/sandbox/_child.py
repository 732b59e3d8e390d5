"""A sandbox that is a child process of the executor: bubblewrap, or the plain process backend."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import suppress

from executors.sandbox._output import Lines, Tail, chunks
from executors.sandbox.base import Exit

Signal = Callable[[int], None]
_DRAIN = 5.0  # after the exit, how long output may keep arriving from what the process left behind


class Child:
    """Stdout lines, stderr's tail, the exit and `stop` of a child process started in its own session.

    `send` delivers a signal to what runs inside (the sandbox's PID 1, or the process group). With
    `group=True` the whole process group is killed once the process exits, so nothing it started
    outlives the sandbox.
    """

    def __init__(self, process: asyncio.subprocess.Process, send: Signal, *, group: bool) -> None:
        assert process.stdout is not None
        assert process.stderr is not None
        self._process, self._send, self._group = process, send, group
        self._lines, self._stderr = Lines(), Tail()
        self._pumps = [
            asyncio.create_task(self._lines.pump(chunks(process.stdout))),
            asyncio.create_task(self._stderr.pump(chunks(process.stderr))),
        ]

    def lines(self) -> AsyncIterator[bytes]:
        return self._lines.lines()

    async def wait(self) -> Exit:
        returncode = await self._process.wait()
        self._leftovers()
        await asyncio.wait(self._pumps, timeout=_DRAIN)
        # A signal death is reported as a shell would (128 + n), as the container engines do.
        return Exit(code=returncode if returncode >= 0 else 128 - returncode, stderr=self._stderr.text())

    async def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL if the process is still alive after `grace` seconds."""
        if self._process.returncode is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await self._process.wait()
        except TimeoutError:
            self._signal(signal.SIGKILL)
            await self._process.wait()

    async def close(self) -> None:
        """Kill what is still running and stop reading its output."""
        if self._process.returncode is None:
            self._signal(signal.SIGKILL)
            await self._process.wait()
        self._leftovers()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    def _signal(self, signum: int) -> None:
        with suppress(ProcessLookupError, PermissionError):
            self._send(signum)

    def _leftovers(self) -> None:
        if self._group:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)
