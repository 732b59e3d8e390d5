"""A projector process that dawdles inside each transaction, so a test can kill it in the middle of one.

    python _projector_proc.py <nats-url> <duckdb-path> <max-batch> <seconds-before-commit>

Applies the log from the file's checkpoint to the current end in small batches. Before each COMMIT it
prints `COMMITTING <n> <last-seq-of-the-batch>` and sleeps, with the batch's rows written but not yet
committed; it prints `DONE <seq>` if nobody kills it first.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any, cast

import duckdb
import structlog

import bus
from projectors.prices import load as load_prices
from projectors.projector import Projector
from projectors.store import Store


class SlowCommit:
    """Wraps the store's connection: every COMMIT is announced, then delayed (the window for the kill)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, delay: float) -> None:
        self._con = con
        self._delay = delay
        self._commits = 0

    def execute(self, query: str, parameters: object = None) -> duckdb.DuckDBPyConnection:
        if query == "COMMIT":
            self._commits += 1
            row = self._con.execute("SELECT last_seq FROM checkpoint WHERE id = 1").fetchone()
            print(f"COMMITTING {self._commits} {row[0] if row else 0}", flush=True)
            time.sleep(self._delay)  # in the worker thread, inside the open transaction
        return self._con.execute(query, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


async def main(url: str, path: Path, max_batch: int, delay: float) -> None:
    con = duckdb.connect(str(path))
    store = Store(cast(duckdb.DuckDBPyConnection, SlowCommit(con, delay)), load_prices())
    store.setup()
    async with bus.connect(bus.Settings(url=url), name="slow-projector") as conn:
        projector = Projector(conn, store, max_batch=max_batch)
        await projector.run(until_end=True)
    con.close()
    print(f"DONE {projector.applied_seq}", flush=True)


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
