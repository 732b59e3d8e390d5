"""Who is calling: the API key in `Authorization: Bearer`, its tenant and role, and what the role allows.

Every request's tenant comes from its key, never from the URL or the body, so a key can only ever read
or command its own tenant's subjects.
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

import msgspec
from aiohttp import web

from gateway.keys_cache import KeyCache, parse_token
from gateway.problems import Problem
from schemas import ulid_millis

Capability = Literal["read", "command", "sql", "admin"]
CAPABILITIES: dict[str, frozenset[Capability]] = {
    "admin": frozenset({"read", "command", "sql", "admin"}),
    "operator": frozenset({"read", "command"}),
    "analyst": frozenset({"read", "sql"}),
    "viewer": frozenset({"read"}),
}
# A key this young may not have reached this replica's cache yet: wait for it briefly rather than refuse.
_FRESH_MS = 60_000
_FRESH_WAIT = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    tenant: str
    role: str
    name: str

    @property
    def actor(self) -> str:
        return self.key_id

    def can(self, capability: Capability) -> bool:
        return capability in CAPABILITIES[self.role]


PRINCIPAL = web.RequestKey("principal", Principal)


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Problem("unauthorized", "send an API key as `Authorization: Bearer <key>`")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem("unauthorized", "the Authorization header must be `Bearer <key>`")
    return token.strip()


async def authenticate(keys: KeyCache, token: str, now: datetime | None = None) -> Principal:
    """The principal a token stands for; `Problem("unauthorized")` for anything else."""
    parsed = parse_token(token)
    if parsed is None:
        raise Problem("unauthorized", "the API key is not valid")
    key_id, secret_hash = parsed
    state = keys.get(key_id)
    if state is None and _fresh(key_id):
        state = await keys.wait_for(key_id, _FRESH_WAIT)
    if state is None or not hmac.compare_digest(state.secret_hash, secret_hash):
        raise Problem("unauthorized", "the API key is not valid")
    if not state.usable(now or datetime.now(UTC)):
        why = "revoked" if state.revoked_at else "expired"
        raise Problem("unauthorized", f"the API key is {why}")
    return Principal(key_id=state.key_id, tenant=state.tenant, role=state.role, name=state.name)


def _fresh(key_id: str) -> bool:
    try:
        age = time.time() * 1000 - ulid_millis(key_id)
    except ValueError:
        return False
    return -_FRESH_MS < age < _FRESH_MS


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def requires(capability: Capability) -> Callable[[Handler], Handler]:
    """A handler only for keys whose role grants `capability` (the middleware has authenticated)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            who = principal(request)
            if not who.can(capability):
                raise Problem("forbidden", f"role {who.role} may not {_VERBS[capability]}")
            return await handler(request)

        return checked

    return wrap


_VERBS: dict[Capability, str] = {
    "read": "read",
    "command": "issue commands",
    "sql": "run analyst SQL (needs analyst or admin)",
    "admin": "manage API keys (needs admin)",
}
