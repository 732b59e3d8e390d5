"""Constrained type aliases, defined once and validated whenever a message is decoded."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta

from schemas.ids import ULID_PATTERN


def _id(prefix: str, what: str) -> Meta:
    return Meta(pattern=f"^{prefix}_{ULID_PATTERN}$", description=f"{what} id: `{prefix}_` and a ULID")


RunId = Annotated[str, _id("run", "Run")]
ProjectId = Annotated[str, _id("prj", "Project")]
PatternId = Annotated[str, _id("pat", "Pattern")]
EventId = Annotated[str, _id("evt", "Event")]
CommandId = Annotated[str, _id("cmd", "Command")]
KeyId = Annotated[str, _id("key", "API key")]

CausationId = Annotated[
    str,
    Meta(pattern=f"^(cmd|evt)_{ULID_PATTERN}$", description="The command or event this message answers"),
]
TenantId = Annotated[
    str,
    Meta(
        pattern="^[a-z][a-z0-9-]{0,30}[a-z0-9]$",
        description="Tenant: 2-32 lower-case letters, digits and dashes (a NATS subject token)",
    ),
]
ActorId = Annotated[
    str,
    Meta(
        pattern="^(key|exe|sys)_[0-9A-Za-z-]{1,64}$",
        description="Who acted: an API key id, an executor id or a system component (`sys_<name>`)",
    ),
]
TaskType = Annotated[
    str, Meta(pattern="^[a-z][a-z0-9_]{1,31}$", description="Task type name, e.g. `code` or `research`")
]
Digest = Annotated[str, Meta(pattern="^[0-9a-f]{64}$", description="Lower-case hex SHA-256")]
UtcTime = Annotated[datetime, Meta(tz=True, description="RFC 3339 time with an offset (UTC)")]

Name = Annotated[str, Meta(min_length=1, max_length=200)]
ShortText = Annotated[str, Meta(max_length=2_000)]
Text = Annotated[str, Meta(max_length=64_000)]
Instructions = Annotated[str, Meta(min_length=1, max_length=32_000)]
Count = Annotated[int, Meta(ge=0)]
Positive = Annotated[int, Meta(gt=0)]
