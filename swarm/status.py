"""`swarm status`: the log's size, every work queue's lag and the live replicas of every role."""

from __future__ import annotations

import json

import msgspec

import bus
from bus.status import ConsumerStatus, ServiceInstance, StreamStatus, services, stream_status

ROLES = {"executors": "executor (runs)", "registry": "registry (projects)", "patterns": "pattern extractor"}


async def show(settings: bus.Settings, as_json: bool) -> int:
    """Print the status; exit 1 when a role has no live replica."""
    async with bus.connect(settings, name="swarm-status") as conn:
        stream = await stream_status(conn)
        live = await services(conn)
    missing = _missing(stream, live)
    if as_json:
        payload = {
            "stream": msgspec.to_builtins(stream),
            "services": msgspec.to_builtins(live),
            "missing": missing,
        }
        print(json.dumps(payload))
    else:
        print(_describe(stream, live, missing))
    return 1 if missing else 0


def _missing(stream: StreamStatus, live: list[ServiceInstance]) -> list[str]:
    """Roles with no sign of a replica: no consumer asking for work or holding any, no service answering."""
    missing = [
        ROLES[consumer.name]
        for consumer in stream.consumers
        if consumer.name in ROLES and consumer.waiting == 0 and consumer.ack_pending == 0
    ]
    if not any(instance.name == "projectors" for instance in live):
        missing.append("projector (read models)")
    return missing


def _describe(stream: StreamStatus, live: list[ServiceInstance], missing: list[str]) -> str:
    lines = [
        f"log       stream {stream.name}: {stream.messages:,} messages, {stream.bytes / 2**20:.1f} MiB, "
        f"sequences {stream.first_seq}..{stream.last_seq}",
        *(_queue(consumer) for consumer in stream.consumers),
    ]
    names = sorted({instance.name for instance in live})
    for name in names:
        replicas = [instance for instance in live if instance.name == name]
        lines.append(f"service   {name}: {len(replicas)} replica(s), version {replicas[0].version}")
    lines.extend(f"MISSING   {role}: no live replica" for role in missing)
    return "\n".join(lines)


def _queue(consumer: ConsumerStatus) -> str:
    role = ROLES.get(consumer.name, consumer.name)
    return (
        f"queue     {role}: lag {consumer.pending:,}, in flight {consumer.ack_pending}, "
        f"redelivered {consumer.redelivered}, replicas asking {consumer.waiting}"
    )
