"""Small helpers the route modules share: the command envelope, read options, JSON answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

import bus
from gateway import queries
from gateway.auth import principal
from gateway.bodies import number
from gateway.context import CONN, SETTINGS
from schemas import IdSource, Kind, subjects
from schemas.queries import Params

ids = IdSource()
_MAX_SEQ = float(2**63)


def conn(request: web.Request) -> bus.Connection:
    return request.app[CONN]


def envelope(request: web.Request) -> dict[str, Any]:
    """The fields every command carries, from the caller's key (never from the body)."""
    who = principal(request)
    agent = request.headers.get("User-Agent", "")[:120]
    return {
        "id": ids.new(Kind.COMMAND),
        "at": datetime.now(UTC),
        "tenant": who.tenant,
        "actor": who.actor,
        "origin": f"gateway {agent}".strip(),
    }


def wait_seconds(request: web.Request) -> float:
    """`?wait=SECONDS`, at most the configured most; 0 when absent."""
    return number(request, "wait", most=request.app[SETTINGS].max_wait_seconds) or 0.0


def min_seq(request: web.Request) -> int | None:
    """`?min_seq=N`: answer from a replica that has applied the log at least that far."""
    value = number(request, "min_seq", most=_MAX_SEQ)
    return None if value is None else int(value)


async def ask(request: web.Request, name: str, params: Params) -> queries.Answer:
    return await queries.ask(
        conn(request),
        principal(request).tenant,
        name,
        params,
        min_seq=min_seq(request),
        wait_ms=request.app[SETTINGS].query_wait_ms,
    )


async def run_exists(connection: bus.Connection, tenant: str, run_id: str) -> bool:
    """Whether the tenant's log has the run's start command or any of its events."""
    if await connection.log.last(subjects.commands(tenant, "run", run_id, "start")) is not None:
        return True
    return await connection.log.last(subjects.events(tenant, "run", run_id)) is not None


async def fresh(request: web.Request, name: str, params: Params) -> queries.Answer:
    """Ask as of the log's current end, so what was written a moment ago is seen (a command's check)."""
    return await queries.ask(
        conn(request),
        principal(request).tenant,
        name,
        params,
        min_seq=await conn(request).log.end(),
        wait_ms=request.app[SETTINGS].query_wait_ms,
    )


async def read(request: web.Request, name: str, params: Params) -> web.Response:
    """Ask the query of the caller's tenant and pass its data through; `?min_seq=` reads your writes."""
    answer = await ask(request, name, params)
    headers = {"X-Applied-Seq": str(answer.applied_seq)} if answer.applied_seq is not None else None
    return web.Response(body=bytes(answer.data), content_type="application/json", headers=headers)


def json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(value), content_type="application/json", headers=headers
    )
