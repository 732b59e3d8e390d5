"""The API key aggregate's messages: a key bound to one tenant and one role, created and revoked.

A key's secret is never in the log: only the SHA-256 of its 32 random bytes (`secret_hash`), so the
log (and every replica that folds it) can check a presented key without being able to forge one.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from schemas.base import CommandBase, EventBase
from schemas.types import Digest, KeyId, Name, ShortText, UtcTime

Role = Literal["admin", "operator", "analyst", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "operator", "analyst", "viewer")


# Commands


class KeyCommandBase(CommandBase, frozen=True, kw_only=True):
    AGGREGATE: ClassVar[str] = "key"
    key_id: KeyId

    @property
    def aggregate_id(self) -> str:
        return self.key_id


class CreateKey(KeyCommandBase, frozen=True, kw_only=True, tag="key.create"):
    """A new key in the command's tenant; `expires_at` none means it never expires."""

    name: Name
    role: Role
    secret_hash: Digest
    expires_at: UtcTime | None = None


class RevokeKey(KeyCommandBase, frozen=True, kw_only=True, tag="key.revoke"):
    reason: ShortText = ""


# Events


class KeyEvent(EventBase, frozen=True, kw_only=True):
    AGGREGATE: ClassVar[str] = "key"
    key_id: KeyId

    @property
    def aggregate_id(self) -> str:
        return self.key_id


class KeyCreated(KeyEvent, frozen=True, kw_only=True, tag="key.created"):
    name: Name
    role: Role
    secret_hash: Digest
    expires_at: UtcTime | None = None


class KeyRevoked(KeyEvent, frozen=True, kw_only=True, tag="key.revoked"):
    reason: ShortText = ""


KeyCommand = CreateKey | RevokeKey
KeyEvents = KeyCreated | KeyRevoked
