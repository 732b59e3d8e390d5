"""Every API key of every tenant, folded from the log: auth never needs a database.

Each replica follows `swarm.*.evt.key.>` from the start of the log, so a key created or revoked through
any replica (or `swarm keys`) is known to all of them within the log's delivery latency.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import secrets

import structlog

import bus
from schemas import IllegalTransition, InvalidMessage, KeyCreated, KeyRevoked, decode_event
from schemas.key_state import KeyState, evolve

log = structlog.get_logger(__name__)

KEY_EVENTS = "swarm.*.evt.key.>"
SECRET_BYTES = 32


def new_secret(key_id: str) -> tuple[str, str]:
    """A fresh key: the token shown once (`<key_id>.<secret>`) and the SHA-256 hex kept in the log."""
    raw = secrets.token_bytes(SECRET_BYTES)
    token = f"{key_id}.{base64.urlsafe_b64encode(raw).decode().rstrip('=')}"
    return token, hashlib.sha256(raw).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """The key id and the secret's hash of a presented token, or `None` when it is not shaped like one."""
    key_id, dot, secret = token.partition(".")
    if not dot or not key_id.startswith("key_") or len(key_id) > 40 or len(secret) != 43:
        return None
    try:
        raw = base64.urlsafe_b64decode(secret + "=")
    except (binascii.Error, ValueError):
        return None
    return (key_id, hashlib.sha256(raw).hexdigest()) if len(raw) == SECRET_BYTES else None


class KeyCache:
    """Key states by id, kept current by `run()`; `ready` once the log up to its start is folded."""

    def __init__(self, log_: bus.Log) -> None:
        self._log = log_
        self._keys: dict[str, KeyState] = {}
        self._changed = asyncio.Condition()
        self.ready = asyncio.Event()
        self.seq = 0

    def get(self, key_id: str) -> KeyState | None:
        return self._keys.get(key_id)

    def of_tenant(self, tenant: str) -> list[KeyState]:
        return sorted((k for k in self._keys.values() if k.tenant == tenant), key=lambda k: k.key_id)

    async def wait_for(self, key_id: str, within: float, version: int = 1) -> KeyState | None:
        """The key once it has reached `version` (1: created), or what is known after `within` seconds."""
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: self._version(key_id) >= version)
        except TimeoutError:
            pass
        return self._keys.get(key_id)

    def _version(self, key_id: str) -> int:
        state = self._keys.get(key_id)
        return 0 if state is None else state.version

    async def run(self) -> None:
        """Fold what the log holds, become ready, then follow it until cancelled."""
        async for record in self._log.read(KEY_EVENTS):
            await self._apply(record)
        self.ready.set()
        log.info("keys_loaded", keys=len(self._keys), seq=self.seq)
        async for record in self._log.follow(KEY_EVENTS, after_seq=self.seq):
            await self._apply(record)

    async def _apply(self, record: bus.Record) -> None:
        self.seq = record.seq
        try:
            event = decode_event(record.data)
        except InvalidMessage as exc:
            log.warning("key_event_unreadable", seq=record.seq, problem=exc.detail)
            return
        if not isinstance(event, KeyCreated | KeyRevoked):
            return
        try:
            before = self._keys.get(event.key_id) or KeyState(key_id=event.key_id)
            self._keys[event.key_id] = evolve(before, event)
        except IllegalTransition as exc:
            log.warning("key_event_out_of_order", seq=record.seq, problem=str(exc))
            return
        async with self._changed:
            self._changed.notify_all()
