"""The projector role as one unit: store, projector and query service, stopped in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

import bus
from projectors.projector import Projector
from projectors.service import serve
from projectors.settings import Settings
from projectors.store import open_store

log = structlog.get_logger(__name__)


async def run(conn: bus.Connection, settings: Settings, stop: asyncio.Event) -> None:
    """Follow the log and answer queries until `stop` is set; then stop serving, finish the batch, close."""
    with open_store(Path(settings.database), pattern_min_runs=settings.pattern_min_runs) as store:
        projector = Projector(conn, store, max_batch=settings.max_batch)
        async with serve(conn, projector, store), asyncio.TaskGroup() as tasks:
            tasks.create_task(projector.run())
            log.info("projector_serving", database=settings.database, applied_seq=projector.applied_seq)
            await stop.wait()
            projector.shutdown()
