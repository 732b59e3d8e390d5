"""Who is on a WebSocket: a single-use ticket (`?ticket=`, from `POST /v1/tickets`) or the first frame
`{"type": "auth", "key": "...", "after_seq": N}`, so a long-lived key never goes in a URL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from aiohttp import WSMsgType, web
from msgspec import Meta

from gateway.auth import Principal, authenticate
from gateway.context import KEYS, SETTINGS, TICKETS
from gateway.problems import Problem
from gateway.pump import AUTH_FAILED, BAD_REQUEST


class AuthFrame(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: Annotated[str, Meta(pattern="^auth$")]
    key: Annotated[str, Meta(max_length=200)]
    after_seq: Annotated[int, Meta(ge=0)] | None = None


class Closed(Exception):
    """Close the socket with this code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def authenticate_socket(
    request: web.Request, ws: web.WebSocketResponse, scope: str, after_seq: int
) -> tuple[Principal, int]:
    """The caller, by a single-use ticket (`?ticket=`) or the first frame; and its after_seq."""
    app = request.app
    ticket = request.query.get("ticket")
    if ticket is not None:
        key_id = await app[TICKETS].redeem(ticket, scope)
        state = app[KEYS].get(key_id) if key_id else None
        if state is None or not state.usable(datetime.now(UTC)):
            raise Closed(AUTH_FAILED, "the ticket is not valid, expired or already used")
        who = Principal(key_id=state.key_id, tenant=state.tenant, role=state.role, name=state.name)
    else:
        frame = await _first_frame(ws, app[SETTINGS].ws_auth_timeout)
        try:
            who = await authenticate(app[KEYS], frame.key)
        except Problem as exc:
            raise Closed(AUTH_FAILED, exc.detail) from None
        after_seq = frame.after_seq if frame.after_seq is not None else after_seq
    if not who.can("read"):
        raise Closed(AUTH_FAILED, "this key may not read")
    return who, after_seq


async def _first_frame(ws: web.WebSocketResponse, within: float) -> AuthFrame:
    try:
        async with asyncio.timeout(within):
            message = await ws.receive()
    except TimeoutError:
        raise Closed(AUTH_FAILED, "no auth frame in time") from None
    if message.type is not WSMsgType.TEXT:
        raise Closed(AUTH_FAILED, "the first frame must be a text auth frame")
    try:
        return msgspec.json.decode(message.data, type=AuthFrame)
    except msgspec.MsgspecError:
        raise Closed(BAD_REQUEST, 'the first frame must be {"type": "auth", "key": ...}') from None
