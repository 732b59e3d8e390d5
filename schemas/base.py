"""The envelope every command and event carries, and the small value types messages share."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from schemas.types import (
    ActorId,
    CausationId,
    CommandId,
    Count,
    Digest,
    EventId,
    Positive,
    TenantId,
    UtcTime,
)

SCHEMA_VERSION = 1


class CommandBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    """A fact of intent: who asked for what, when and from where."""

    id: CommandId
    at: UtcTime
    tenant: TenantId
    actor: ActorId
    origin: Annotated[str, Meta(max_length=200)] | None = None
    schema_version: int = 1  # absent means 1: this default never changes; newer writers set it

    @property
    def type(self) -> str:
        return str(self.__struct_config__.tag)


class EventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    """A fact of outcome. `prev_hash` is the SHA-256 of the previous event on the same subject.

    The first event of an aggregate has no `prev_hash`; the writer fills it in at append time, so the
    events of every aggregate form a hash chain.
    """

    id: EventId
    at: UtcTime
    tenant: TenantId
    actor: ActorId
    causation_id: CausationId | None = None
    schema_version: int = 1  # absent means 1: this default never changes; newer writers set it
    prev_hash: Digest | None = None

    @property
    def type(self) -> str:
        return str(self.__struct_config__.tag)


class BlobRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A large body kept in the object store, addressed by its SHA-256."""

    sha256: Digest
    size: Count
    media_type: Annotated[str, Meta(max_length=100)] = "application/octet-stream"


class Body(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Text that is inline when small; otherwise a preview plus a reference to the whole body."""

    text: Annotated[str, Meta(max_length=65_536)] = ""
    ref: BlobRef | None = None

    @property
    def truncated(self) -> bool:
        return self.ref is not None


class Usage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Model tokens."""

    input_tokens: Count = 0
    cached_input_tokens: Count = 0
    output_tokens: Count = 0
    reasoning_output_tokens: Count = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            reasoning_output_tokens=self.reasoning_output_tokens + other.reasoning_output_tokens,
        )


class RunLimits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Per-run limits; `None` means the deployment's default."""

    deadline_seconds: Positive | None = None
    idle_seconds: Positive | None = None
    max_tokens: Positive | None = None
    max_cost_usd: Annotated[float, Meta(gt=0)] | None = None
    max_events: Positive | None = None
    max_bytes: Positive | None = None
