"""`swarm up`: the embedded system on one machine, supervised by one task group, stopped by a signal."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

import bus
from projectors import role as projector_role
from swarm.roles import stop_on_signals
from swarm.settings import Settings


async def run(settings: Settings, *, as_json: bool = False) -> int:
    """Start NATS with JetStream under `data_dir`, provision the log, and wait for Ctrl-C or SIGTERM."""
    stop = stop_on_signals()
    data_dir = Path(settings.data_dir)
    async with bus.embedded(settings.server, data_dir / "nats") as server:
        bus_settings = msgspec.structs.replace(settings.bus, url=server.url)
        async with bus.connect(bus_settings, name="swarm-up") as conn:
            await conn.provision()
            state = (await conn.js.stream_info(bus_settings.stream)).state
            _announce(server, settings, bus_settings.stream, state.messages, state.last_seq, as_json)
            await projector_role.run(conn, settings.projector, stop)
    print("codex-swarm stopped", flush=True)
    return 0


def _announce(
    server: bus.RunningServer, settings: Settings, stream: str, messages: int, last_seq: int, as_json: bool
) -> None:
    data_dir, database = settings.data_dir, settings.projector.database
    if as_json:
        print(
            json.dumps(
                {
                    "event": "ready",
                    "nats_url": server.url,
                    "data_dir": data_dir,
                    "projection": database,
                    "stream": stream,
                    "messages": messages,
                    "last_seq": last_seq,
                }
            ),
            flush=True,
        )
        return
    print(
        "codex-swarm is up\n"
        f"  NATS (JetStream)  {server.url}\n"
        f"  data directory    {data_dir}\n"
        f"  log               stream {stream}: {messages} messages, last sequence {last_seq}\n"
        f"  read models       {database} (queries on swarmq.<tenant>.<query>)\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )
