"""The proxy: per-run listeners with capability tokens, in front of one upstream.

One aiohttp `AppRunner` serves every run; each run adds its own listening sockets (a unix socket,
optionally a loopback TCP port) and a request is matched to its run by the local address it arrived
on, so a token is valid only on its own run's listeners. One `ClientSession` keeps the upstream
connections pooled for all runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
import structlog
from aiohttp import hdrs, web
from yarl import URL

from executors.proxy import _forward
from executors.proxy._inspect import model_of_request
from executors.proxy._reports import BadRunId, Grant, ModelCall, OnReport, RunAlreadyOpen, Upstream
from executors.proxy._run import Address, Run
from schemas import Usage

log = structlog.get_logger(__name__)

SOCKET_NAME = "model.sock"
_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL


class ModelProxy:
    """The model endpoint for sandboxes: `async with ModelProxy(upstream, socket_dir) as proxy: ...`.

    `open_run` gives a run its endpoint and token; `close_run` takes them away. Leaving the context
    closes every run, the listeners and the upstream connections. `host` is where TCP listeners bind,
    `max_body_bytes` the largest request accepted, `shutdown_timeout` the grace a call in flight gets
    when its run is closed.
    """

    def __init__(
        self,
        upstream: Upstream,
        socket_dir: Path,
        *,
        host: str = "127.0.0.1",
        max_body_bytes: int = 64 * 1024 * 1024,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.upstream = upstream
        self.socket_dir = socket_dir
        self._host = host
        self._base = upstream.base_url.rstrip("/")
        self._runs: dict[str, Run] = {}
        self._by_address: dict[Address, Run] = {}
        self._app = web.Application(client_max_size=max_body_bytes)
        self._app.router.add_route("*", "/v1/{rest:.*}", self._handle)
        self._app.router.add_route("*", "/{rest:.*}", _not_found)
        self._shutdown_timeout = shutdown_timeout
        self._runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            timeout = aiohttp.ClientTimeout(connect=self.upstream.timeout, sock_read=self.upstream.timeout)
            connector = aiohttp.TCPConnector(limit=0)
            session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, skip_auto_headers=[hdrs.USER_AGENT]
            )
            self._session = await stack.enter_async_context(session)
            await self._runner.setup()
            stack.push_async_callback(self._runner.cleanup)
            self._stack = stack.pop_all()
        log.info("proxy_started", upstream=URL(self._base).host, socket_dir=str(self.socket_dir))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.gather(*(self.close_run(run_id) for run_id in list(self._runs)))
        await self._stack.aclose()
        self._session = None

    async def open_run(
        self, run_id: str, *, max_tokens: int | None, on_report: OnReport, tcp: bool = False
    ) -> Grant:
        """Listen on `<socket_dir>/<run_id>/model.sock` (and a loopback port if `tcp`) for this run.

        The directory is 0755 and the socket 0666, so a sandboxed process of any uid can connect: the
        token, not the file mode, is what admits a request.
        """
        path = self._socket_path(run_id)
        if run_id in self._runs:
            raise RunAlreadyOpen(run_id)
        run = Run(Grant(run_id, secrets.token_urlsafe(32), path), max_tokens, on_report)
        try:
            await self._listen(run, _unix_socket(path), str(path))
            if tcp:
                port = await self._listen_tcp(run)
                run.grant = Grant(run_id, run.grant.token, path, f"http://{self._host}:{port}/v1")
        except BaseException:
            await self._stop(run)
            raise
        self._runs[run_id] = run
        log.info("proxy_run_opened", run_id=run_id, socket=str(path), tcp=tcp, max_tokens=max_tokens)
        return run.grant

    async def close_run(self, run_id: str) -> None:
        """Stop the run's listeners, hang up its connections and delete its socket. Idempotent.

        A call in flight gets `shutdown_timeout` seconds to finish; then it is cut, and reported with
        what had been relayed. Its report is made before this returns (each wait bounded by the grace).
        """
        run = self._runs.pop(run_id, None)
        if run is not None:
            await self._stop(run)
            log.info("proxy_run_closed", run_id=run_id, used_tokens=run.used)

    def _socket_path(self, run_id: str) -> Path:
        if not _RUN_ID.fullmatch(run_id):
            raise BadRunId(
                run_id, "use letters, digits, '_', '.' and '-' (at most 128, not starting with '.')"
            )
        path = self.socket_dir / run_id / SOCKET_NAME
        if len(str(path).encode()) > _UNIX_PATH_MAX:
            raise BadRunId(run_id, f"socket path {path} is longer than {_UNIX_PATH_MAX} bytes")
        return path

    async def _listen(self, run: Run, sock: socket.socket, address: Address) -> None:
        site = web.SockSite(self._runner, sock)
        run.sites.append(site)
        run.addresses.append(address)
        self._by_address[address] = run
        await site.start()

    async def _listen_tcp(self, run: Run) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        port: int = sock.getsockname()[1]
        await self._listen(run, sock, port)
        return port

    async def _stop(self, run: Run) -> None:
        for address in run.addresses:
            self._by_address.pop(address, None)
        for site in run.sites:
            await site.stop()
        await self._hang_up(set(run.addresses))
        await run.settled(self._shutdown_timeout)
        run.grant.socket.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            run.grant.socket.parent.rmdir()

    async def _hang_up(self, addresses: set[Address]) -> None:
        """Close the connections that arrived on `addresses`, a call in flight after its grace period."""
        server = self._runner.server
        connections = server.connections if server is not None else []
        mine = [c for c in connections if c.transport is not None and _address(c.transport) in addresses]
        for connection in mine:
            connection.close()  # wakes an idle keep-alive connection, as aiohttp's own shutdown does
        await asyncio.gather(*(connection.shutdown(self._shutdown_timeout) for connection in mine))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        run = self._by_address.get(_address(request.transport))
        if run is None or not run.admits(request.headers.get(hdrs.AUTHORIZATION)):
            return _forward.error_response(
                401, "missing or invalid token for this endpoint", "invalid_request_error", "invalid_api_key"
            )
        if run.exhausted:
            return _budget_refusal(run)
        if not request.raw_path.startswith("/v1/") or {".", ".."} & set(request.path.split("/")):
            return await _not_found(request)
        with run.tracking():
            return await self._proxy(run, request)

    async def _proxy(self, run: Run, request: web.Request) -> web.StreamResponse:
        started_at, start = datetime.now(UTC), time.perf_counter()
        body = await request.read()
        await run.check_sandbox(body)
        assert self._session is not None, "ModelProxy is used outside its context"
        url = URL(self._base + request.raw_path[len("/v1") :], encoded=True)
        headers = _forward.upstream_headers(request.headers, run.grant.run_id, self.upstream.api_key)
        response, exchange = await _forward.forward(self._session, request, url, headers, body)
        call = _model_call(run, request.path, body, exchange, started_at, time.perf_counter() - start)
        log.info(
            "proxy_model_call", run_id=call.run_id, path=call.path, status=call.status, model=call.model,
            latency_ms=call.latency_ms, input_tokens=call.usage.input_tokens,
            output_tokens=call.usage.output_tokens, error=call.error,
        )  # fmt: skip
        await run.account(call)
        if exchange.cancelled:
            raise asyncio.CancelledError  # recorded above; the cancellation itself goes on
        return response


def _model_call(
    run: Run, path: str, body: bytes, exchange: _forward.Exchange, started_at: datetime, seconds: float
) -> ModelCall:
    final = exchange.final
    return ModelCall(
        run_id=run.grant.run_id,
        path=path,
        model=(final.model if final else None) or model_of_request(body),
        status=exchange.status,
        latency_ms=round(seconds * 1000),
        usage=final.tokens() if final else Usage(),
        request_body=body,
        response_body=exchange.body,
        started_at=started_at,
        error=exchange.error,
    )


def _address(transport: asyncio.BaseTransport | None) -> Address:
    """The local address a connection arrived on: the unix socket path, or the TCP port (-1: gone)."""
    name = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(name, str):
        return name
    return name[1] if isinstance(name, tuple) else -1


def _unix_socket(path: Path) -> socket.socket:
    """A unix socket bound at `path` in a fresh 0755 directory, the socket itself 0666."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    path.unlink(missing_ok=True)  # a leftover of a crashed attempt of the same run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        path.chmod(0o666)
    except OSError:
        sock.close()
        raise
    return sock


def _budget_refusal(run: Run) -> web.Response:
    message = f"run {run.grant.run_id} has used {run.used} of its {run.max_tokens} tokens"
    return _forward.error_response(429, message, "budget_exceeded", "budget_exceeded")


async def _not_found(request: web.Request) -> web.Response:
    message = f"no such endpoint: {request.method} {request.path} (the proxy serves /v1/...)"
    return _forward.error_response(404, message, "invalid_request_error", "not_found")
