"""The gateway as the CLI sees it: JSON over HTTP with an API key, run events over a WebSocket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

import aiohttp
import msgspec


class ClientSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the CLI finds the gateway, and the API key it sends (`swarm up` prints both)."""

    url: str = "http://127.0.0.1:8080"
    key: str = ""
    timeout: float = 30.0


class ApiError(Exception):
    """The gateway refused or failed a request; fields from its problem document."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(f"{detail} (HTTP {status}, {kind})")
        self.status, self.kind, self.detail = status, kind, detail


class Unreachable(ApiError):
    def __init__(self, url: str, why: str) -> None:
        super().__init__(0, "unreachable", f"the gateway at {url} cannot be reached: {why}")


class Client:
    """One HTTP session to the gateway; `async with Client(settings) as api: await api.get(...)`."""

    def __init__(self, settings: ClientSettings) -> None:
        if not settings.key:
            raise ApiError(0, "no_key", "no API key: set client.key (SWARM_CLIENT__KEY) or use --key")
        self._settings = settings
        self._base = settings.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self._settings.key}"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=self._settings.timeout),
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return json.loads(await self._call("GET", path, params=_query(params)))

    async def post(
        self, path: str, body: Any = None, *, idempotency_key: str | None = None, wait: float | None = None
    ) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"wait": str(wait)} if wait else None
        data = await self._call("POST", path, json=body or {}, headers=headers, params=params)
        return json.loads(data)

    async def patch(self, path: str, body: Any) -> Any:
        return json.loads(await self._call("PATCH", path, json=body))

    async def download(self, path: str, params: Mapping[str, Any] | None = None) -> bytes:
        return await self._call("GET", path, params=_query(params))

    async def frames(self, path: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The frames of a relay socket (`ready`, `event`, `position`, `end`); the key goes in the first."""
        session = self._open()
        url = self._base.replace("http", "ws", 1) + path
        try:
            async with session.ws_connect(url, heartbeat=30) as socket:
                await socket.send_json({"type": "auth", "key": self._settings.key, "after_seq": after_seq})
                async for message in socket:
                    if message.type is aiohttp.WSMsgType.TEXT:
                        yield json.loads(message.data)
                if socket.close_code not in (None, 1000):
                    raise ApiError(socket.close_code or 0, "socket_closed", _closed(socket))
        except aiohttp.ClientConnectionError as exc:
            raise Unreachable(self._base, str(exc)) from exc

    async def _call(self, method: str, path: str, **options: Any) -> bytes:
        session = self._open()
        try:
            async with session.request(method, self._base + path, **options) as response:
                data = await response.read()
                if response.status >= 400:
                    raise _problem(response.status, data)
                return data
        except aiohttp.ClientConnectionError as exc:
            raise Unreachable(self._base, str(exc)) from exc

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client inside `async with`")
        return self._session


def _query(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    return {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in params.items()
        if value is not None
    }


def _problem(status: int, data: bytes) -> ApiError:
    try:
        problem = json.loads(data)
        return ApiError(status, str(problem.get("type", "error")), str(problem.get("detail", "")))
    except ValueError:
        return ApiError(status, "error", data.decode(errors="replace")[:500])


def _closed(socket: aiohttp.ClientWebSocketResponse) -> str:
    return f"the gateway closed the event stream (code {socket.close_code})"
