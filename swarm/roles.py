"""Entry points for running one role on its own, and the operator commands of the projection."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
from pathlib import Path

import msgspec

import bus
from executors import role as executor_role
from projectors import admin
from projectors import role as projector_role
from swarm.settings import Settings


def stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM, so the process can stop in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def settle_heap() -> None:
    """Move what start-up allocated (modules, settings, the app) out of the collector's view.

    A full collection walks every tracked object; with everything imported, one took 50 to 70 ms in the
    gateway, a stall every socket shares. After the freeze, collections walk only what was allocated
    since, so they stay short however large the code base is.
    """
    gc.collect()
    gc.freeze()


async def projector(settings: Settings) -> int:
    """Run a projector replica against `bus.url` until Ctrl-C or SIGTERM."""
    stop = stop_on_signals()
    async with bus.connect(settings.bus, name="swarm-projector") as conn:
        await conn.provision()
        settle_heap()
        await projector_role.run(conn, settings.projector, stop)
    return 0


async def executor(settings: Settings) -> int:
    """Run an executor replica (runs and project commands) against `bus.url` until Ctrl-C or SIGTERM."""
    stop = stop_on_signals()
    async with bus.connect(settings.bus, name="swarm-executor") as conn:
        await conn.provision()
        settle_heap()
        await executor_role.run(conn, settings.executor, stop)
    return 0


async def rebuild(settings: Settings) -> int:
    database = Path(settings.projector.database)
    last = await admin.rebuild_file(settings.bus, database, workers=settings.projector.rebuild_workers)
    print(f"rebuilt {database} from the log: sequences 1..{last}")
    return 0


async def check(settings: Settings, as_json: bool) -> int:
    workers = settings.projector.rebuild_workers
    drift = await admin.check_file(settings.bus, Path(settings.projector.database), workers=workers)
    if as_json:
        print(json.dumps(msgspec.to_builtins(drift) | {"clean": drift.clean}))
    elif drift.clean:
        print(f"no drift: every table equals a rebuild at sequence {drift.seq}")
    else:
        names = ", ".join(t.table for t in drift.tables_differing)
        print(f"DRIFT at sequence {drift.seq}: {names} differ from a rebuild")
    return 0 if drift.clean else 1


async def export(settings: Settings, action: admin.Action, path: Path) -> int:
    files = await admin.perform(action, settings.bus, Path(settings.projector.database), path)
    for file in files:
        print(file)
    return 0
