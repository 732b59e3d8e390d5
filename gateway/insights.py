"""Dashboard stats, analyst SQL (analyst or admin) and the pattern library: queries to the projectors."""

from __future__ import annotations

from aiohttp import web

from gateway.auth import requires
from gateway.bodies import Strict, body, path, query
from gateway.http import read
from schemas.queries import GetPattern, ListPatterns, Sql, Stats
from schemas.types import PatternId

routes = web.RouteTableDef()


@routes.get("/v1/stats")
@requires("read")
async def stats(request: web.Request) -> web.Response:
    return await read(request, "stats", query(request, Stats))


@routes.post("/v1/sql")
@requires("sql")
async def sql(request: web.Request) -> web.Response:
    """One read-only SELECT over the caller's tenant's read models (see README, "Analyst SQL")."""
    return await read(request, "sql", await body(request, Sql))


@routes.get("/v1/patterns")
@requires("read")
async def patterns(request: web.Request) -> web.Response:
    return await read(request, "list_patterns", query(request, ListPatterns))


@routes.get("/v1/patterns/{pattern_id}")
@requires("read")
async def pattern(request: web.Request) -> web.Response:
    pattern_id = path(request, "pattern_id", PatternId)
    query(request, Strict)
    return await read(request, "get_pattern", GetPattern(pattern_id=pattern_id))
