"""API keys over REST (admin only): create (the secret is shown once), list, get, revoke; and tickets.

Keys are commands and events like everything else: the gateway sends `key.create` / `key.revoke`, the
registry decides and appends, and every replica's `KeyCache` learns the outcome from the log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from gateway import commands
from gateway.auth import principal, requires
from gateway.bodies import CreateKeyBody, ReasonBody, Strict, TicketBody, body, path, query
from gateway.context import KEYS, SETTINGS, TICKETS
from gateway.http import conn, envelope, ids, json, run_exists, wait_seconds
from gateway.keys_cache import new_secret
from gateway.problems import Problem
from schemas import CreateKey, Kind, RevokeKey
from schemas.key_state import KeyState, KeyStatus
from schemas.types import KeyId

routes = web.RouteTableDef()

_DEFAULT_WAIT = 5.0  # a new key is most useful once every replica knows it: wait for that by default


class KeyView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    role: str
    tenant: str
    status: str
    created_at: datetime | None
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None


def view(state: KeyState) -> KeyView:
    return KeyView(
        id=state.key_id,
        name=state.name,
        role=state.role,
        tenant=state.tenant,
        status=str(state.status),
        created_at=state.created_at,
        created_by=state.created_by,
        expires_at=state.expires_at,
        revoked_at=state.revoked_at,
    )


@routes.post("/v1/keys")
@requires("admin")
async def create(request: web.Request) -> web.Response:
    given = await body(request, CreateKeyBody)
    key_id = ids.new(Kind.KEY)
    token, secret_hash = new_secret(key_id)
    command = CreateKey(
        **envelope(request),
        key_id=key_id,
        name=given.name,
        role=given.role,
        secret_hash=secret_hash,
        expires_at=given.expires_at,
    )
    submitted = await commands.submit(conn(request), command, commands.idempotency_key(request))
    first = submitted.command
    assert isinstance(first, CreateKey)
    state = await request.app[KEYS].wait_for(first.key_id, _wait(request))
    answer: dict[str, Any] = {
        "id": first.key_id,
        "name": first.name,
        "role": first.role,
        "tenant": first.tenant,
        "expires_at": first.expires_at,
        "status": "active" if state else "pending",
        "seq": submitted.seq,
        "duplicate": submitted.duplicate,
    }
    if not submitted.duplicate:
        answer["key"] = token  # shown once: only its hash is kept
    headers = {"Location": f"/v1/keys/{first.key_id}"}
    return json(answer, status=201 if state else 202, headers=headers)


@routes.get("/v1/keys")
@requires("admin")
async def list_(request: web.Request) -> web.Response:
    query(request, Strict)
    keys = request.app[KEYS].of_tenant(principal(request).tenant)
    return json({"items": [view(state) for state in keys]})


@routes.get("/v1/keys/{key_id}")
@requires("admin")
async def get(request: web.Request) -> web.Response:
    query(request, Strict)
    return json(view(_own(request)))


@routes.post("/v1/keys/{key_id}/revoke")
@requires("admin")
async def revoke(request: web.Request) -> web.Response:
    state = _own(request)
    given = await body(request, ReasonBody, optional=True)
    command = RevokeKey(**envelope(request), key_id=state.key_id, reason=given.reason)
    submitted = await commands.submit(conn(request), command, commands.idempotency_key(request))
    after = await request.app[KEYS].wait_for(state.key_id, _wait(request), version=2)
    revoked = after is not None and after.status is KeyStatus.REVOKED
    answer = {"id": state.key_id, "status": "revoked" if revoked else "pending", "seq": submitted.seq}
    return json(answer, status=200 if revoked else 202)


def _own(request: web.Request) -> KeyState:
    """The key named in the path, if it is the caller's tenant's; another tenant's key does not exist."""
    key_id = path(request, "key_id", KeyId)
    state = request.app[KEYS].get(key_id)
    if state is None or state.tenant != principal(request).tenant:
        raise Problem("not-found", f"no key {key_id} in this tenant")
    return state


def _wait(request: web.Request) -> float:
    return wait_seconds(request) if "wait" in request.query else _DEFAULT_WAIT


@routes.post("/v1/tickets")
@requires("read")
async def ticket(request: web.Request) -> web.Response:
    """A single-use ticket to open one WebSocket within `gateway.ticket_ttl` seconds."""
    given = await body(request, TicketBody, optional=True)
    if given.run_id and not await run_exists(conn(request), principal(request).tenant, given.run_id):
        raise Problem("not-found", f"run {given.run_id} does not exist in this tenant")
    tickets = request.app[TICKETS]
    scope = given.run_id or "feed"
    issued = tickets.issue(principal(request).key_id, scope)
    socket = f"/v1/runs/{given.run_id}/events" if given.run_id else "/v1/events"
    return json(
        {
            "ticket": issued,
            "expires_in": request.app[SETTINGS].ticket_ttl,
            "url": f"{socket}?ticket={issued}",
        },
        status=201,
    )
