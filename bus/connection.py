"""One NATS connection per process, opened and closed by `connect`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from bus._pipeline import Pipeline
from bus.blobs import Blobs
from bus.claims import Claims
from bus.errors import Unreachable
from bus.log import Log
from bus.provision import provision
from bus.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Connection:
    """What a role uses of NATS: the log, the blob store, claims and, for consumers, JetStream itself."""

    nc: Client
    js: JetStreamContext
    settings: Settings
    log: Log
    blobs: Blobs
    claims: Claims

    async def provision(self) -> None:
        await provision(self.js, self.settings)


async def _log_error(error: Exception) -> None:
    log.warning("nats_error", error=repr(error))


@contextlib.asynccontextmanager
async def connect(settings: Settings, *, name: str = "swarm") -> AsyncIterator[Connection]:
    """Connect to NATS; on exit, drain: finish pending publishes and subscriptions, then close.

    The first connection must succeed within `connect_timeout`; after that, reconnects never give up.
    """
    try:
        async with asyncio.timeout(settings.connect_timeout):
            nc = await nats.connect(
                settings.url.split(","),
                name=name,
                user=settings.user,
                password=settings.password,
                token=settings.token,
                user_credentials=settings.creds_file,
                connect_timeout=settings.connect_timeout,
                reconnect_time_wait=0.5,
                max_reconnect_attempts=-1,
                error_cb=_log_error,
            )
    except (TimeoutError, OSError, NatsError) as exc:
        raise Unreachable(settings.url, settings.connect_timeout) from exc
    js = nc.jetstream()
    pipeline = Pipeline(
        nc,
        max_in_flight=settings.max_in_flight,
        timeout=settings.publish_timeout,
        attempts=settings.publish_attempts,
    )
    await pipeline.start()
    try:
        yield Connection(
            nc=nc,
            js=js,
            settings=settings,
            log=Log(js, pipeline, settings),
            blobs=Blobs(js, settings),
            claims=Claims(js, settings),
        )
    finally:
        await pipeline.stop()
        if not nc.is_closed:
            await nc.drain()
