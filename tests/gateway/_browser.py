"""A real headless Chromium driven over the DevTools protocol: navigate, evaluate, wait for the page."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import need

BINARIES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
_LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")


def browser_binary() -> str:
    for name in BINARIES:
        if found := shutil.which(name):
            return found
    need("chromium", "no headless Chromium; install it with: apt-get install -y chromium-headless-shell")
    raise AssertionError("unreachable")


class Page:
    """One tab: `navigate`, `evaluate` JavaScript, and `until` an expression is truthy."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        await self._socket.send_json({"id": number, "method": method, "params": params})
        async for message in self._socket:
            answer = json.loads(message.data)
            if answer.get("id") == number:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer["result"]
                return result
        raise AssertionError("the browser closed the DevTools socket")

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression: str, within: float = 15.0) -> Any:
        """The value of `expression` once it is truthy; polled, since the page changes on its own (an
        expression that throws, e.g. while the page is still loading, counts as not yet)."""
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        async with asyncio.timeout(within):
            while not (value := await self.evaluate(guarded)):  # noqa: ASYNC110  # the page changes on its own
                await asyncio.sleep(0.1)
        return value


@contextlib.asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[Page]:
    """A headless Chromium with one blank tab, killed on exit."""
    process = await asyncio.create_subprocess_exec(
        browser_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
        f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # Debian's launcher is a shell script: the browser is its child
    )  # fmt: skip
    try:
        endpoint = await _devtools(process)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{endpoint}/json/list") as listing:
                target = next(t for t in await listing.json() if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                yield Page(socket)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


async def _devtools(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    async with asyncio.timeout(30):
        while line := await process.stderr.readline():
            if found := _LISTENING.search(line):
                return found.group(1).decode().split("/")[2]
    raise AssertionError("Chromium did not open its DevTools port")
