"""The pure key lifecycle: absent ──created──▶ active ──revoked──▶ revoked (final).

Expiry is not an event: a key past `expires_at` is refused by `usable(now)`, so no clock runs in the log.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import assert_never

import msgspec

from schemas.errors import IllegalTransition, Rejected
from schemas.key import CreateKey, KeyCommand, KeyCreated, KeyEvents, KeyRevoked, RevokeKey, Role
from schemas.rules import Context


class KeyStatus(StrEnum):
    ABSENT = "absent"
    ACTIVE = "active"
    REVOKED = "revoked"


class KeyState(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    status: KeyStatus = KeyStatus.ABSENT
    tenant: str = ""
    name: str = ""
    role: Role = "viewer"
    secret_hash: str = ""
    expires_at: datetime | None = None
    created_at: datetime | None = None
    created_by: str = ""
    created_for: str = ""  # the command that created the key: a redelivered command changes nothing
    revoked_at: datetime | None = None
    version: int = 0

    def usable(self, now: datetime) -> bool:
        """Active and not expired at `now`."""
        expired = self.expires_at is not None and now >= self.expires_at
        return self.status is KeyStatus.ACTIVE and not expired


def evolve(state: KeyState, event: KeyEvents) -> KeyState:
    match event:
        case KeyCreated() if state.status is KeyStatus.ABSENT:
            return KeyState(
                key_id=event.key_id,
                status=KeyStatus.ACTIVE,
                tenant=event.tenant,
                name=event.name,
                role=event.role,
                secret_hash=event.secret_hash,
                expires_at=event.expires_at,
                created_at=event.at,
                created_by=event.actor,
                created_for=event.causation_id or "",
                version=state.version + 1,
            )
        case KeyRevoked() if state.status is KeyStatus.ACTIVE:
            return msgspec.structs.replace(
                state, status=KeyStatus.REVOKED, revoked_at=event.at, version=state.version + 1
            )
        case KeyCreated() | KeyRevoked():
            raise IllegalTransition("key", state.key_id, str(state.status), event.type)
        case _:
            assert_never(event)


def fold(key_id: str, events: Iterable[KeyEvents]) -> KeyState:
    state = KeyState(key_id=key_id)
    for event in events:
        state = evolve(state, event)
    return state


def decide(state: KeyState, command: KeyCommand, ctx: Context) -> list[KeyEvents]:
    """The events a key command produces; `Rejected` says why it cannot apply."""
    match command:
        case CreateKey() if state.created_for == command.id:
            return []  # the same command delivered again: it already happened
        case CreateKey():
            if state.status is not KeyStatus.ABSENT:
                raise Rejected("key", state.key_id, "it already exists")
            return [
                KeyCreated(
                    **ctx.envelope(command),
                    key_id=command.key_id,
                    name=command.name,
                    role=command.role,
                    secret_hash=command.secret_hash,
                    expires_at=command.expires_at,
                )
            ]
        case RevokeKey():
            if state.status is not KeyStatus.ACTIVE:
                why = "it does not exist" if state.status is KeyStatus.ABSENT else "it is already revoked"
                raise Rejected("key", state.key_id, why)
            return [KeyRevoked(**ctx.envelope(command), key_id=command.key_id, reason=command.reason)]
        case _:
            assert_never(command)
