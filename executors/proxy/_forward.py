"""One request forwarded upstream and its answer written back as it arrives, both bodies captured.

Only end-to-end headers the model API needs go upstream (never the client's `Authorization`); the
answer's headers come back without hop-by-hop and framing headers, since the body is re-framed here.
Streamed answers (`text/event-stream`) are written chunk by chunk, unbuffered; anything else is read
whole and answered with a length. Each answer is finished (`write_eof`) before this returns, so what
the caller does next (reporting) never delays the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass

import aiohttp
import msgspec
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from executors.proxy._inspect import Final, SseScanner, final_of_json

log = structlog.get_logger(__name__)

RUN_HEADER = "x-swarm-run"
_FORWARDED = frozenset(
    {"content-type", "accept", "session-id", "thread-id", "x-client-request-id", "originator", "user-agent"}
)
_FORWARDED_PREFIXES = ("x-codex-", "x-swarm-")
_NOT_RETURNED = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "content-length", "content-encoding", "date", "server",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Exchange:
    """How a forwarded call went: the status and body the client got, and the answer's model/usage."""

    status: int
    body: bytes
    final: Final | None = None
    error: str = ""
    cancelled: bool = False  # the relay was cut by a cancellation, which the caller must re-raise


def upstream_headers(incoming: Mapping[str, str], run_id: str, api_key: str) -> dict[str, str]:
    """The headers sent upstream: the allowed client headers, the run id, and the upstream key."""
    headers = {name: value for name, value in incoming.items() if _forwarded(name.lower())}
    headers[RUN_HEADER] = run_id
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _forwarded(name: str) -> bool:
    return (name in _FORWARDED or name.startswith(_FORWARDED_PREFIXES)) and name != RUN_HEADER


def _returned(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in _NOT_RETURNED)


async def forward(
    session: aiohttp.ClientSession, request: web.Request, url: URL, headers: dict[str, str], body: bytes
) -> tuple[web.StreamResponse, Exchange]:
    """Send the request to `url` and answer the client; upstream failures become 502 / 504 answers."""
    try:
        async with session.request(request.method, url, headers=headers, data=body or None) as answer:
            if answer.content_type == "text/event-stream":
                return await _stream(request, answer)
            return await _whole(request, answer)
    except TimeoutError as exc:
        return await _failed(request, 504, "upstream_timeout", "the model upstream timed out", exc)
    except aiohttp.ClientError as exc:
        return await _failed(request, 502, "upstream_unreachable", "the model upstream is unreachable", exc)


async def _stream(
    request: web.Request, answer: aiohttp.ClientResponse
) -> tuple[web.StreamResponse, Exchange]:
    """Relay an event stream chunk by chunk; a client hanging up stops the relay but keeps the record.

    Codex hangs up as soon as it has read `response.completed`, so the last writes may fail.
    """
    response = web.StreamResponse(
        status=answer.status, reason=answer.reason, headers=_returned(answer.headers)
    )
    chunks: list[bytes] = []
    scanner = SseScanner()
    error, cancelled = "", False
    client_here = await _client_took(response.prepare(request))
    try:
        async for chunk in answer.content.iter_any():
            chunks.append(chunk)
            scanner.feed(chunk)
            client_here = client_here and await _client_took(response.write(chunk))
            if not client_here:
                break
    except (TimeoutError, aiohttp.ClientError) as exc:
        error = f"upstream stream broke: {type(exc).__name__}"
        log.warning("proxy_upstream_stream_broke", path=request.path, error=type(exc).__name__)
    except asyncio.CancelledError:  # re-raised by the caller once the partial call is recorded
        error, cancelled, client_here = "cut: the endpoint was closed mid-stream", True, False
    scanner.finish()
    if client_here:
        await _client_took(response.write_eof())
    return response, Exchange(answer.status, b"".join(chunks), scanner.final, error, cancelled)


async def _whole(request: web.Request, answer: aiohttp.ClientResponse) -> tuple[web.StreamResponse, Exchange]:
    body = await answer.read()
    response = web.Response(
        body=body, status=answer.status, reason=answer.reason, headers=_returned(answer.headers)
    )
    await _finish(request, response)
    return response, Exchange(answer.status, body, final_of_json(body))


async def _failed(
    request: web.Request, status: int, code: str, message: str, exc: BaseException
) -> tuple[web.StreamResponse, Exchange]:
    kind = type(exc).__name__
    log.warning("proxy_upstream_failed", path=request.path, status=status, error=kind)
    body = error_body(f"{message} ({kind})", "upstream_error", code)
    response = web.Response(body=body, status=status, content_type="application/json")
    await _finish(request, response)
    return response, Exchange(status, body, error=f"{code}: {kind}")


async def _finish(request: web.Request, response: web.StreamResponse) -> None:
    if await _client_took(response.prepare(request)):
        await _client_took(response.write_eof())


async def _client_took(write: Awaitable[object]) -> bool:
    """Await a write to the client; False when the client has gone (which is not an error here)."""
    try:
        await write
    except ConnectionResetError:
        return False
    return True


def error_body(message: str, kind: str, code: str) -> bytes:
    """An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}`."""
    return msgspec.json.encode({"error": {"message": message, "type": kind, "param": None, "code": code}})


def error_response(status: int, message: str, kind: str, code: str) -> web.Response:
    """An OpenAI-style error answer with `status`."""
    return web.Response(body=error_body(message, kind, code), status=status, content_type="application/json")
