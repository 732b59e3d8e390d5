"""Runs: start and cancel (commands); list, get, steps and model calls (queries)."""

from __future__ import annotations

from aiohttp import web

from gateway import commands
from gateway.auth import principal, requires
from gateway.bodies import ReasonBody, StartRunBody, Strict, body, path, query
from gateway.http import conn, envelope, fresh, ids, read, run_exists, wait_seconds
from gateway.problems import Problem
from schemas import AnyEvent, CancelRun, Kind, StartRun, subjects
from schemas.queries import GetRun, Limit, ListRuns, RunPage
from schemas.run import TerminalEvents
from schemas.types import Count, RunId

routes = web.RouteTableDef()


@routes.post("/v1/runs")
@requires("command")
async def start(request: web.Request) -> web.Response:
    given = await body(request, StartRunBody)
    await _require_known(request, given.project_id, given.reference_run_id, given.from_run_id)
    command = StartRun(
        **envelope(request),
        run_id=ids.new(Kind.RUN),
        project_id=given.project_id,
        instructions=given.instructions,
        task_type=given.task_type,
        reference_run_id=given.reference_run_id,
        from_run_id=given.from_run_id,
        pattern_ids=given.pattern_ids,
        auto_patterns=given.auto_patterns,
        limits=given.limits.limits(),
    )
    return await _issue(request, command)


@routes.post("/v1/runs/{run_id}/cancel")
@requires("command")
async def cancel(request: web.Request) -> web.Response:
    run_id = path(request, "run_id", RunId)
    given = await body(request, ReasonBody, optional=True)
    await fresh(request, "get_run", GetRun(run_id=run_id))  # 404 for a run this tenant does not have
    return await _issue(request, CancelRun(**envelope(request), run_id=run_id, reason=given.reason))


async def _require_known(request: web.Request, project_id: str, *run_ids: str | None) -> None:
    """404 when the project or a named run is not the caller's tenant's (read from the log: cheap)."""
    connection, tenant = conn(request), principal(request).tenant
    created = subjects.commands(tenant, "project", project_id, "create")  # accepted, maybe not yet applied
    if await connection.log.last(created) is None:
        raise Problem("not-found", f"project {project_id} does not exist in this tenant")
    for run_id in run_ids:
        if run_id is not None and not await run_exists(connection, tenant, run_id):
            raise Problem("not-found", f"run {run_id} does not exist in this tenant")


async def _issue(request: web.Request, command: StartRun | CancelRun) -> web.Response:
    """The run's outcome is its terminal event, whichever command asked."""
    submitted = await commands.submit(conn(request), command, commands.idempotency_key(request))
    first = submitted.command
    assert isinstance(first, StartRun | CancelRun)
    found = await commands.outcome(
        conn(request), commands.event_subject(first), 0, _terminal, wait_seconds(request)
    )
    return commands.answer(submitted, first.run_id, f"/v1/runs/{first.run_id}", found)


def _terminal(event: AnyEvent) -> bool:
    return isinstance(event, TerminalEvents)


@routes.get("/v1/runs")
@requires("read")
async def list_(request: web.Request) -> web.Response:
    return await read(request, "list_runs", query(request, ListRuns))


@routes.get("/v1/runs/{run_id}")
@requires("read")
async def get(request: web.Request) -> web.Response:
    run_id = path(request, "run_id", RunId)
    query(request, Strict)
    return await read(request, "get_run", GetRun(run_id=run_id))


class PageParams(Strict, frozen=True):
    after_seq: Count = 0
    limit: Limit = 100


@routes.get("/v1/runs/{run_id}/steps")
@requires("read")
async def steps(request: web.Request) -> web.Response:
    return await _page(request, "run_steps")


@routes.get("/v1/runs/{run_id}/model-calls")
@requires("read")
async def model_calls(request: web.Request) -> web.Response:
    return await _page(request, "run_model_calls")


async def _page(request: web.Request, name: str) -> web.Response:
    run_id = path(request, "run_id", RunId)
    page = query(request, PageParams)
    return await read(request, name, RunPage(run_id=run_id, after_seq=page.after_seq, limit=page.limit))
