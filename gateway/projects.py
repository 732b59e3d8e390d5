"""Projects: create, update, archive (commands) and list, get (queries)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from gateway import commands
from gateway.auth import requires
from gateway.bodies import (
    CreateProjectBody,
    ReasonBody,
    Strict,
    UpdateProjectBody,
    body,
    path,
    query,
    source,
)
from gateway.http import conn, envelope, fresh, ids, read, wait_seconds
from gateway.problems import Problem
from schemas import ArchiveProject, CreateProject, Kind, UpdateProject
from schemas.queries import GetProject, ListProjects
from schemas.types import ProjectId

routes = web.RouteTableDef()


@routes.post("/v1/projects")
@requires("command")
async def create(request: web.Request) -> web.Response:
    given = await body(request, CreateProjectBody)
    command = CreateProject(
        **envelope(request),
        project_id=ids.new(Kind.PROJECT),
        name=given.name,
        source=source(given.source),
        description=given.description,
        default_task_type=given.default_task_type,
    )
    return await _issue(request, command)


@routes.patch("/v1/projects/{project_id}")
@requires("command")
async def update(request: web.Request) -> web.Response:
    project_id = path(request, "project_id", ProjectId)
    given = await body(request, UpdateProjectBody)
    await _require_active(request, project_id)
    command = UpdateProject(
        **envelope(request),
        project_id=project_id,
        name=given.name,
        source=None if given.source is None else source(given.source),
        description=given.description,
        default_task_type=given.default_task_type,
    )
    return await _issue(request, command)


@routes.post("/v1/projects/{project_id}/archive")
@requires("command")
async def archive(request: web.Request) -> web.Response:
    project_id = path(request, "project_id", ProjectId)
    given = await body(request, ReasonBody, optional=True)
    await _require_active(request, project_id)
    return await _issue(
        request, ArchiveProject(**envelope(request), project_id=project_id, reason=given.reason)
    )


async def _require_active(request: web.Request, project_id: str) -> None:
    """Refuse at once what the registry would refuse (it decides again; this is for a clear answer)."""
    answer = await fresh(request, "get_project", GetProject(project_id=project_id))  # 404 if unknown
    if msgspec.json.decode(answer.data).get("status") == "archived":
        raise Problem("conflict", f"project {project_id} is archived")


async def _issue(
    request: web.Request, command: CreateProject | UpdateProject | ArchiveProject
) -> web.Response:
    key = commands.idempotency_key(request)
    return await commands.issue(conn(request), command, key, wait_seconds(request), "/v1/projects")


@routes.get("/v1/projects")
@requires("read")
async def list_(request: web.Request) -> web.Response:
    return await read(request, "list_projects", query(request, ListProjects))


@routes.get("/v1/projects/{project_id}")
@requires("read")
async def get(request: web.Request) -> web.Response:
    project_id = path(request, "project_id", ProjectId)
    query(request, Strict)  # refuses unknown parameters
    return await read(request, "get_project", GetProject(project_id=project_id))
