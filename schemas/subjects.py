"""Subject names (DESIGN.md, "The log"): tenant first, so permissions and filters work per tenant.

swarm.<tenant>.cmd.<aggregate>.<id>.<verb>     commands
swarm.<tenant>.evt.<aggregate>.<id>            events
"""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.codec import AnyCommand, AnyEvent
from schemas.errors import InvalidMessage

ROOT = "swarm"
STREAM_SUBJECTS = (f"{ROOT}.*.cmd.>", f"{ROOT}.*.evt.>")


class Subject(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    kind: Literal["cmd", "evt"]
    aggregate: str
    id: str
    verb: str | None = None


def events(tenant: str, aggregate: str, aggregate_id: str) -> str:
    return f"{ROOT}.{tenant}.evt.{aggregate}.{aggregate_id}"


def commands(tenant: str, aggregate: str = "*", aggregate_id: str = "*", verb: str = "*") -> str:
    return f"{ROOT}.{tenant}.cmd.{aggregate}.{aggregate_id}.{verb}"


def tenant_log(tenant: str) -> str:
    """Every command and event of one tenant."""
    return f"{ROOT}.{tenant}.>"


def of_command(command: AnyCommand) -> str:
    verb = command.type.rsplit(".", 1)[1]
    return commands(command.tenant, command.AGGREGATE, command.aggregate_id, verb)


def of_event(event: AnyEvent) -> str:
    return events(event.tenant, event.AGGREGATE, event.aggregate_id)


def parse(subject: str) -> Subject:
    parts = subject.split(".")
    match parts:
        case [root, tenant, "cmd", aggregate, aggregate_id, verb] if root == ROOT:
            return Subject(tenant=tenant, kind="cmd", aggregate=aggregate, id=aggregate_id, verb=verb)
        case [root, tenant, "evt", aggregate, aggregate_id] if root == ROOT:
            return Subject(tenant=tenant, kind="evt", aggregate=aggregate, id=aggregate_id)
        case _:
            raise InvalidMessage(f"not a swarm subject: {subject!r}")
