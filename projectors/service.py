"""Queries over NATS: every replica serves every query, sharing the load in queue group `projectors`.

Subject `swarmq.<tenant>.<query>`: a root apart from the `swarm.` stream subjects, so a query is never
captured by the SWARM stream, and the tenant is a subject token, so NATS permissions can confine a
caller to its own. The replica takes the tenant from the subject, never from the body.

    request  {"params": {...}, "min_seq": N, "wait_ms": N}           every field optional
    reply    {"ok": true, "applied_seq": N, "data": ...}
             {"ok": false, "error": {"type": "bad_request", "detail": "..."}}

With `min_seq`, the replica answers once it has applied the log at least that far, waiting at most
`wait_ms` (default 5000, at most 30000), else `not_caught_up`. `applied_seq` is where the replica stood
when the query began: the data reflects at least that much of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import duckdb
import msgspec
import structlog
from msgspec import Meta

import bus
from projectors import admin
from projectors.projector import Projector
from projectors.queries import (
    ERRORS,
    QUERIES,
    BadRequest,
    Internal,
    NotCaughtUp,
    QueryError,
    Unavailable,
    answer,
)
from projectors.store import Store
from schemas.queries import Params
from schemas.types import TenantId

log = structlog.get_logger(__name__)

ROOT = "swarmq"
QUEUE = "projectors"
VERSION = "1.0.0"
DEFAULT_WAIT_MS = 5_000
MAX_WAIT_MS = 30_000
_REPLY_MARGIN = 5.0  # seconds a client allows beyond the wait, for the query itself


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    params: msgspec.Raw = msgspec.Raw(b"{}")
    min_seq: Annotated[int, Meta(ge=0)] | None = None
    wait_ms: Annotated[int, Meta(ge=0, le=MAX_WAIT_MS)] = DEFAULT_WAIT_MS


class Problem(msgspec.Struct, frozen=True):
    type: str
    detail: str


class Reply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    ok: bool
    applied_seq: int | None = None
    data: Any = None
    error: Problem | None = None


_request_decoder = msgspec.json.Decoder(Request)
_reply_decoder = msgspec.json.Decoder(Reply)
_encoder = msgspec.json.Encoder()


def subject(tenant: str, name: str) -> str:
    """Where query `name` of `tenant` is asked; `tenant` may be `*` to serve every tenant."""
    return f"{ROOT}.{tenant}.{name}"


class Replica:
    """Answers queries from one `Store`, once its `Projector` has applied what a request asks for."""

    def __init__(self, projector: Projector, store: Store) -> None:
        self._projector = projector
        self._store = store

    async def handle(self, subject: str, body: bytes) -> bytes:
        """Answer one request with a reply envelope; every failure becomes an `ok: false` reply."""
        try:
            tenant, name = _route(subject)
            request = _decode_request(body)
            await self._catch_up(request)
            applied = self._projector.applied_seq
            data = await asyncio.to_thread(self._run, tenant, name, request.params)
        except QueryError as exc:
            return _encoder.encode(Reply(ok=False, error=Problem(exc.type, exc.detail)))
        return _encoder.encode(Reply(ok=True, applied_seq=applied, data=data))

    async def _catch_up(self, request: Request) -> None:
        wanted, within = request.min_seq, request.wait_ms / 1000
        if wanted is None or await self._projector.wait_for(wanted, within):
            return
        applied = self._projector.applied_seq
        raise NotCaughtUp(f"applied up to {applied}, not {wanted}, within {request.wait_ms} ms")

    def _run(self, tenant: str, name: str, params: msgspec.Raw) -> msgspec.Raw:
        """In a worker thread, on a cursor of its own; encodes there too, off the event loop."""
        try:
            with self._store.cursor() as cur:
                return msgspec.Raw(_encoder.encode(answer(cur, tenant, name, bytes(params))))
        except duckdb.Error as exc:
            log.exception("query_failed", tenant=tenant, query=name)
            raise Internal("the query failed on this replica") from exc


@contextlib.asynccontextmanager
async def serve(
    conn: bus.Connection, projector: Projector, store: Store, *, max_in_flight: int = 64
) -> AsyncIterator[bus.Service]:
    """Serve every query of every tenant from `store` until exit (see `bus.serve` for shutdown)."""
    replica = Replica(projector, store)
    endpoints = {name: (subject("*", name), replica.handle) for name in QUERIES} | admin.endpoints(
        conn, store
    )
    async with bus.serve(
        conn,
        name="projectors",
        version=VERSION,
        endpoints=endpoints,
        queue=QUEUE,
        description="Read-model queries, scoped to the tenant in the subject",
        max_in_flight=max_in_flight,
    ) as service:
        yield service


async def query(
    conn: bus.Connection,
    tenant: str,
    name: str,
    params: Mapping[str, Any] | Params | None = None,
    *,
    min_seq: int | None = None,
    wait_ms: int = DEFAULT_WAIT_MS,
) -> Any:
    """Ask any replica query `name` for `tenant`; return the reply's `data` (JSON values).

    Raises the `QueryError` the reply names, `BadRequest` for an unknown query (without asking), and
    `Unavailable` when no replica answers within `wait_ms` plus a margin.
    """
    if name not in QUERIES:
        raise BadRequest(f"unknown query {name!r}; known: {', '.join(sorted(QUERIES))}")
    body = Request(params=msgspec.Raw(_encoder.encode(params or {})), min_seq=min_seq, wait_ms=wait_ms)
    try:
        raw = await bus.request(
            conn, subject(tenant, name), _encoder.encode(body), within=wait_ms / 1000 + _REPLY_MARGIN
        )
    except bus.RequestFailed as exc:
        raise _unanswered(exc) from exc
    reply = _decode_reply(raw)
    if reply.ok:
        return reply.data
    problem = reply.error or Problem("internal", "a failed reply without an error")
    raise ERRORS.get(problem.type, Internal)(problem.detail)


def _route(subject: str) -> tuple[str, str]:
    _, tenant, name = subject.split(".", 2)
    try:
        return msgspec.convert(tenant, TenantId), name
    except msgspec.ValidationError as exc:
        raise BadRequest(f"tenant {tenant!r} in the subject: {exc}") from exc


def _decode_request(body: bytes) -> Request:
    try:
        return _request_decoder.decode(body or b"{}")
    except msgspec.ValidationError as exc:
        raise BadRequest(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the request is not valid JSON: {exc}") from exc


def _decode_reply(raw: bytes) -> Reply:
    try:
        return _reply_decoder.decode(raw)
    except msgspec.MsgspecError as exc:
        raise Internal(f"the replica's reply does not decode: {exc}") from exc


def _unanswered(exc: bus.RequestFailed) -> QueryError:
    match exc.reason:
        case "no_responders" | "timeout":
            return Unavailable(exc.detail)
        case "bad_subject":
            return BadRequest(f"not a valid tenant or query name: {exc.subject!r}")
        case _:
            return Internal(exc.detail)
