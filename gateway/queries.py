"""The gateway's own client of the projector queries: `swarmq.<tenant>.<query>` over `bus.request`.

The envelope is the projectors' contract (README, "Queries over NATS"): request
`{"params", "min_seq", "wait_ms"}`, reply `{"ok", "applied_seq", "data" | "error"}`. Replies' error
types become problems here, in one place.
"""

from __future__ import annotations

from typing import Any

import msgspec

import bus
from gateway.problems import Problem
from schemas.queries import Params

ROOT = "swarmq"
_MARGIN = 5.0  # seconds allowed beyond the replica's wait, for the query itself


class _Request(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    params: Params | dict[str, Any]
    min_seq: int | None = None
    wait_ms: int = 5_000


class _Error(msgspec.Struct, frozen=True):
    type: str
    detail: str


class _Reply(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    applied_seq: int | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")
    error: _Error | None = None


class Answer(msgspec.Struct, frozen=True):
    """The reply's data (still encoded, passed through to the client as it is) and where the replica stood."""

    data: msgspec.Raw
    applied_seq: int | None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Reply)
_SLUGS = {
    "bad_request": "invalid-request",
    "not_found": "not-found",
    "timeout": "query-failed",
    "not_caught_up": "not-caught-up",
    "unavailable": "unavailable",
}


async def ask(
    conn: bus.Connection,
    tenant: str,
    name: str,
    params: Params | None = None,
    *,
    min_seq: int | None = None,
    wait_ms: int = 5_000,
) -> Answer:
    """Ask any projector replica; raise the `Problem` its answer (or its silence) amounts to."""
    body = _Request(params=params or {}, min_seq=min_seq, wait_ms=wait_ms)
    subject = f"{ROOT}.{tenant}.{name}"
    try:
        raw = await bus.request(conn, subject, _encoder.encode(body), within=wait_ms / 1000 + _MARGIN)
    except bus.RequestFailed as exc:
        if exc.reason in {"no_responders", "timeout"}:
            raise Problem(
                "unavailable", "no read-model replica answered", headers={"Retry-After": "1"}
            ) from exc
        raise Problem("bad-gateway", "the read-model replica failed") from exc
    try:
        reply = _decoder.decode(raw)
    except msgspec.MsgspecError as exc:
        raise Problem("bad-gateway", "the read-model replica answered something unreadable") from exc
    if reply.ok:
        return Answer(reply.data, reply.applied_seq)
    error = reply.error or _Error("internal", "")
    slug = _SLUGS.get(error.type, "bad-gateway")
    detail = error.detail if slug != "bad-gateway" else "the read-model replica failed"
    headers = {"Retry-After": "1"} if error.type in {"not_caught_up", "unavailable"} else None
    raise Problem(slug, detail, headers=headers)


async def data(conn: bus.Connection, tenant: str, name: str, params: Params, **options: Any) -> Any:
    """The reply's data decoded to plain values, for the gateway's own use (artifact lookups)."""
    answer = await ask(conn, tenant, name, params, **options)
    return msgspec.json.decode(answer.data)
