"""Pattern curation: edit (a new version), retire and restore — commands the pattern queue decides."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from gateway import commands
from gateway.auth import requires
from gateway.bodies import ReasonBody, Strict, body, path, query
from gateway.http import ask, conn, envelope, fresh, wait_seconds
from gateway.problems import Problem
from schemas import EditPattern, RestorePattern, RetirePattern
from schemas.pattern import MAX_STEPS, MAX_VARIABLES, Content, Step, Variable
from schemas.pattern_render import render
from schemas.queries import GetPattern
from schemas.types import Name, PatternId, ShortText

routes = web.RouteTableDef()


class _Shown(msgspec.Struct, frozen=True):
    """The fields of `get_pattern` that make up its current content."""

    pattern_id: str
    version: int
    name: str
    goal: str
    summary: str
    steps: list[Step]
    variables: list[Variable] = []


@routes.get("/v1/patterns/{pattern_id}/preview")
@requires("read")
async def preview(request: web.Request) -> web.Response:
    """The `<reference_workflow>` block a run applying this pattern gets in its prompt, as text."""
    pattern_id = path(request, "pattern_id", PatternId)
    query(request, Strict)
    answer = await ask(request, "get_pattern", GetPattern(pattern_id=pattern_id))
    shown = msgspec.json.decode(answer.data, type=_Shown)
    content = Content(
        name=shown.name, goal=shown.goal, summary=shown.summary, steps=shown.steps, variables=shown.variables
    )
    text = render(content, pattern_id=shown.pattern_id, version=shown.version)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


class EditPatternBody(Strict, frozen=True):
    """The parts to replace; those left out keep their value."""

    name: Name | None = None
    summary: ShortText | None = None
    steps: Annotated[list[Step], Meta(min_length=1, max_length=MAX_STEPS)] | None = None
    variables: Annotated[list[Variable], Meta(max_length=MAX_VARIABLES)] | None = None


@routes.patch("/v1/patterns/{pattern_id}")
@requires("command")
async def edit(request: web.Request) -> web.Response:
    pattern_id = path(request, "pattern_id", PatternId)
    given = await body(request, EditPatternBody)
    await _require(request, pattern_id, "retired")
    command = EditPattern(
        **envelope(request),
        pattern_id=pattern_id,
        name=given.name,
        summary=given.summary,
        steps=given.steps,
        variables=given.variables,
    )
    return await _issue(request, command)


@routes.post("/v1/patterns/{pattern_id}/retire")
@requires("command")
async def retire(request: web.Request) -> web.Response:
    pattern_id = path(request, "pattern_id", PatternId)
    given = await body(request, ReasonBody, optional=True)
    await _require(request, pattern_id, "retired")
    return await _issue(
        request, RetirePattern(**envelope(request), pattern_id=pattern_id, reason=given.reason)
    )


@routes.post("/v1/patterns/{pattern_id}/restore")
@requires("command")
async def restore(request: web.Request) -> web.Response:
    pattern_id = path(request, "pattern_id", PatternId)
    given = await body(request, ReasonBody, optional=True)
    await _require(request, pattern_id, "active")
    command = RestorePattern(**envelope(request), pattern_id=pattern_id, reason=given.reason)
    return await _issue(request, command)


async def _require(request: web.Request, pattern_id: str, refused: str) -> None:
    """404 for an unknown pattern, 409 when it is `refused` already; the pattern queue decides again."""
    answer = await fresh(request, "get_pattern", GetPattern(pattern_id=pattern_id))
    if msgspec.json.decode(answer.data).get("status") == refused:
        raise Problem("conflict", f"pattern {pattern_id} is {refused}")


async def _issue(request: web.Request, command: EditPattern | RetirePattern | RestorePattern) -> web.Response:
    key = commands.idempotency_key(request)
    return await commands.issue(conn(request), command, key, wait_seconds(request), "/v1/patterns")
