"""Short-lived, single-use tickets for WebSocket authentication, so no long-lived key goes in a URL.

A ticket is `<payload>.<HMAC-SHA256>`: the key it was issued to, the socket it opens (a run id or
`feed`), an expiry and a nonce. Replicas that share `gateway.ticket_secret` accept each other's
tickets; a ticket opens one socket in all: its nonce is claimed in the bus's claims bucket, shared by
every replica, when it is redeemed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

import msgspec

import bus


class _Payload(msgspec.Struct, frozen=True, array_like=True):
    key_id: str
    scope: str
    expires: float
    nonce: str


class Tickets:
    def __init__(
        self, secret: str, ttl: float, claims: bus.Claims, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret.encode() if secret else secrets.token_bytes(32)
        self._ttl = ttl
        self._claims = claims
        self._clock = clock

    @property
    def ttl(self) -> float:
        return self._ttl

    def issue(self, key_id: str, scope: str) -> str:
        payload = _Payload(key_id, scope, self._clock() + self._ttl, secrets.token_urlsafe(12))
        raw = _b64(msgspec.json.encode(payload))
        return f"{raw}.{self._sign(raw)}"

    async def redeem(self, ticket: str, scope: str) -> str | None:
        """The key id a valid, unexpired, unused ticket for `scope` was issued to; else `None`."""
        raw, _, signature = ticket.partition(".")
        if not hmac.compare_digest(signature, self._sign(raw)):
            return None
        try:
            payload = msgspec.json.decode(
                base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), type=_Payload
            )
        except (binascii.Error, ValueError, msgspec.MsgspecError):
            return None
        if payload.scope != scope or payload.expires < self._clock():
            return None
        if not await self._claims.take(f"ticket.{payload.nonce}"):
            return None
        return payload.key_id

    def _sign(self, raw: str) -> str:
        return _b64(hmac.new(self._secret, raw.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
