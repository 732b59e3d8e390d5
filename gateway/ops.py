"""Operations: liveness, readiness, Prometheus metrics, the OpenAPI document and its docs page."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

import bus
from gateway import openapi
from gateway.context import CONN, KEYS, METRICS
from gateway.http import json

routes = web.RouteTableDef()
PAGES = Path(__file__).parent / "pages"
_PING = "$SRV.PING.projectors"


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process answers: nothing else is checked."""
    return json({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """NATS connected, the log's stream present, the keys loaded, and a projector replica answering."""
    conn = request.app[CONN]
    checks = {
        "nats": conn.nc.is_connected,
        "stream": await _stream_present(conn),
        "keys": request.app[KEYS].ready.is_set(),
        "projector": await _projector_answers(conn),
    }
    ready = all(checks.values())
    return json({"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503)


async def _stream_present(conn: bus.Connection) -> bool:
    try:
        await conn.log.end()
    except Exception:  # any failure to describe the stream means it is not usable
        return False
    return True


async def _projector_answers(conn: bus.Connection) -> bool:
    try:
        await bus.request(conn, _PING, b"", within=1.0)
    except bus.BusError:
        return False
    return True


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[METRICS].render(), content_type="text/plain", charset="utf-8")


@routes.get("/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=openapi.document_bytes(), content_type="application/json")


@routes.get("/docs")
async def docs(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGES / "docs.html")
