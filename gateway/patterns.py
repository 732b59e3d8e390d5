"""Pattern curation: edit (a new version), retire and restore — commands the pattern queue decides."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from msgspec import Meta

from gateway import commands
from gateway.auth import requires
from gateway.bodies import ReasonBody, Strict, body, path
from gateway.http import conn, envelope, wait_seconds
from schemas import EditPattern, RestorePattern, RetirePattern
from schemas.pattern import MAX_STEPS, MAX_VARIABLES, Step, Variable
from schemas.types import Name, PatternId, ShortText

routes = web.RouteTableDef()


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
    return await _issue(
        request, RetirePattern(**envelope(request), pattern_id=pattern_id, reason=given.reason)
    )


@routes.post("/v1/patterns/{pattern_id}/restore")
@requires("command")
async def restore(request: web.Request) -> web.Response:
    pattern_id = path(request, "pattern_id", PatternId)
    given = await body(request, ReasonBody, optional=True)
    command = RestorePattern(**envelope(request), pattern_id=pattern_id, reason=given.reason)
    return await _issue(request, command)


async def _issue(request: web.Request, command: EditPattern | RetirePattern | RestorePattern) -> web.Response:
    submitted = await commands.submit(conn(request), command, commands.idempotency_key(request))
    first = submitted.command
    assert isinstance(first, EditPattern | RetirePattern | RestorePattern)
    found = await commands.outcome(
        conn(request),
        commands.event_subject(first),
        submitted.seq,
        commands.caused_by(first),
        wait_seconds(request),
    )
    return commands.answer(submitted, first.pattern_id, f"/v1/patterns/{first.pattern_id}", found)
