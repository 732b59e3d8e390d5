"""The application factory: typed keys, one middleware at the edge, resources in `cleanup_ctx`."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

import bus
from gateway import artifacts, console, insights, keys, ops, patterns, projects, relay, runs
from gateway.auth import PRINCIPAL, Handler, authenticate, bearer
from gateway.context import (
    CONN,
    FRAMES,
    HUBS,
    KEYS,
    LIMITER,
    METRICS,
    SETTINGS,
    STOPPING,
    TICKETS,
)
from gateway.hub import Hubs
from gateway.keys_cache import KeyCache
from gateway.limits import RateLimiter, cors, preflight, secure
from gateway.metrics import Metrics
from gateway.problems import Problem, from_http
from gateway.pump import Frames
from gateway.settings import Settings
from gateway.tickets import Tickets

log = structlog.get_logger("gateway.access")

SELF_AUTHENTICATING = {"/v1/runs/{run_id}/events", "/v1/events"}  # WebSockets: ticket or first frame
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(conn: bus.Connection, settings: Settings) -> web.Application:
    app = web.Application(middlewares=[edge], client_max_size=settings.max_body_bytes)
    app[CONN] = conn
    app[SETTINGS] = settings
    app[KEYS] = KeyCache(conn.log)
    app[LIMITER] = RateLimiter(settings.rate_per_second, settings.rate_burst)
    app[METRICS] = Metrics()
    app[TICKETS] = Tickets(settings.ticket_secret, settings.ticket_ttl, conn.claims)
    app[STOPPING] = asyncio.Event()
    app[FRAMES] = Frames(app[METRICS].relay_lag)
    app[HUBS] = Hubs(conn.log, queue_size=max(1_000, settings.ws_queue * 4))
    app.cleanup_ctx.append(_follow_keys)
    app.cleanup_ctx.append(_close_hubs)
    app.on_shutdown.append(_say_goodbye)
    for module in (projects, runs, artifacts, insights, patterns, keys, relay, ops, console):
        app.add_routes(module.routes)
    return app


async def _follow_keys(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[KEYS].run())
    yield
    task.cancel()
    await asyncio.wait({task})


async def _close_hubs(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[HUBS].close()


async def _say_goodbye(app: web.Application) -> None:
    """Open sockets close with `GOING_AWAY` and their resume point before the server stops."""
    app[STOPPING].set()


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, CORS, size limit, authentication and rate limit; problems; headers; metrics; access log."""
    started = time.perf_counter()
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    route = _route(request)
    try:
        response = await _handle(request, handler, route)
    except Problem as problem:
        response = problem.response(request.path, request_id)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        response = from_http(error).response(request.path, request_id)
    except Exception:  # the last resort: logged with its traceback, answered without internals
        log.exception("request_failed", request_id=request_id, route=route)
        response = Problem(
            "internal", "the gateway failed; the request id identifies it in the logs"
        ).response(request.path, request_id)
    _finish(request, response, request_id, route, started)
    return response


async def _handle(request: web.Request, handler: Handler, route: str) -> web.StreamResponse:
    app = request.app
    allowed = app[SETTINGS].cors_origins
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return preflight(request, allowed)
    if request.content_length is not None and request.content_length > app[SETTINGS].max_body_bytes:
        raise Problem("payload-too-large", f"the body is over {app[SETTINGS].max_body_bytes} bytes")
    if request.path.startswith("/v1/") and route not in SELF_AUTHENTICATING:
        who = await authenticate(app[KEYS], bearer(request))
        app[LIMITER].check(who.key_id)
        request[PRINCIPAL] = who
    return await handler(request)


def _finish(
    request: web.Request, response: web.StreamResponse, request_id: str, route: str, started: float
) -> None:
    elapsed = time.perf_counter() - started
    if not response.prepared:
        secure(response, api=request.path.startswith("/v1/"))
        cors(request, response, request.app[SETTINGS].cors_origins)
        response.headers["X-Request-Id"] = request_id
    request.app[METRICS].request(request.method, route, response.status, elapsed)
    who = request.get(PRINCIPAL)
    log.info(
        "request",
        request_id=request_id,
        method=request.method,
        path=request.path,
        route=route,
        status=response.status,
        ms=round(elapsed * 1000, 2),
        key_id=who.key_id if who else None,
        tenant=who.tenant if who else None,
        remote=request.remote,
    )


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
