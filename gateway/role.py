"""The gateway role: serve the application until `stop`, then close sockets and drain requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from aiohttp import web

import bus
from gateway.app import create_app
from gateway.settings import Settings

log = structlog.get_logger(__name__)


async def run(
    conn: bus.Connection,
    settings: Settings,
    stop: asyncio.Event,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Listen on `settings.host:port` until `stop` is set; `ready` gets the base URL once listening."""
    runner = web.AppRunner(
        create_app(conn, settings), access_log=None, shutdown_timeout=settings.shutdown_grace
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        url = base_url(site, settings)
        log.info("gateway_listening", url=url)
        if ready is not None:
            ready(url)
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("gateway_stopped")


def base_url(site: web.TCPSite, settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    server = site._server  # the bound port, also when 0 asked for a free one
    assert isinstance(server, asyncio.base_events.Server)
    host, port = server.sockets[0].getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"
