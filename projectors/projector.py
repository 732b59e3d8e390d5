"""The projector process: follows the whole log from its checkpoint and applies it in batches."""

from __future__ import annotations

import asyncio

import structlog

import bus
from projectors.settings import MAX_BATCH
from projectors.store import Store

log = structlog.get_logger(__name__)


class Projector:
    """Applies the log to a `Store`; `wait_for(seq)` lets readers ask for their own writes."""

    def __init__(self, conn: bus.Connection, store: Store, *, max_batch: int = MAX_BATCH) -> None:
        self._conn = conn
        self._store = store
        self._max_batch = max_batch
        self._applied = store.last_seq
        self._progress = asyncio.Condition()
        self._stopping = asyncio.Event()

    @property
    def applied_seq(self) -> int:
        return self._applied

    async def run(self, *, until_end: bool = False) -> None:
        """Follow the log (or, with `until_end`, stop at its current end) until `shutdown()`."""
        log.info("projector_started", after_seq=self._applied)
        # Read in a child process: the fold, the writes and the queries keep this interpreter.
        batches = self._conn.log.batches(
            after_seq=self._applied, max_batch=self._max_batch, follow=not until_end, in_child=True
        )
        stop = asyncio.ensure_future(self._stopping.wait())
        step: asyncio.Future[list[bus.Record]] | None = None
        try:
            while not self._stopping.is_set():
                step = asyncio.ensure_future(anext(batches))
                await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    break
                try:
                    batch = step.result()
                except StopAsyncIteration:
                    break
                await self._apply(batch)
        finally:
            stop.cancel()
            if step is not None and not step.done():
                step.cancel()  # the generator is still inside anext: let it unwind before closing it
                await asyncio.wait({step})
            await batches.aclose()
            log.info("projector_stopped", applied_seq=self._applied)

    async def _apply(self, batch: list[bus.Record]) -> None:
        # DuckDB blocks; applying in a worker thread lets the next batch arrive meanwhile.
        self._applied = await asyncio.to_thread(self._store.apply, batch)
        async with self._progress:
            self._progress.notify_all()

    def shutdown(self) -> None:
        self._stopping.set()

    async def wait_for(self, seq: int, within: float) -> bool:
        """True once everything up to `seq` is applied; False if that takes longer than `within` seconds."""
        try:
            async with asyncio.timeout(within), self._progress:
                await self._progress.wait_for(lambda: self._applied >= seq)
        except TimeoutError:
            return False
        return True
