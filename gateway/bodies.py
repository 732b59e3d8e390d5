"""Request bodies and parameters as the gateway accepts them: unknown fields forbidden, sizes bounded.

They mirror the commands in `schemas` minus the envelope (id, time, tenant, actor come from the
gateway and the caller's key) and are converted into those commands by the route handlers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, TypeVar

import msgspec
from aiohttp import web
from msgspec import Meta

from gateway.problems import Problem
from schemas import GitSource, LocalSource, RunLimits, Source
from schemas.key import Role
from schemas.types import Instructions, Name, PatternId, Positive, ProjectId, RunId, ShortText, TaskType

T = TypeVar("T")


class Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class LocalSourceBody(Strict, frozen=True, tag_field="kind", tag="local"):
    path: Annotated[str, Meta(min_length=1, max_length=4096)]


class GitSourceBody(Strict, frozen=True, tag_field="kind", tag="git"):
    url: Annotated[str, Meta(pattern=r"^(https?|ssh|git|file)://\S+$|^[\w.-]+@[\w.-]+:\S+$", max_length=2048)]
    ref: Annotated[str, Meta(min_length=1, max_length=255)] = "HEAD"


SourceBody = LocalSourceBody | GitSourceBody


def source(body: SourceBody) -> Source:
    match body:
        case LocalSourceBody():
            return LocalSource(path=body.path)
        case GitSourceBody():
            return GitSource(url=body.url, ref=body.ref)


class CreateProjectBody(Strict, frozen=True):
    name: Name
    source: SourceBody
    description: ShortText = ""
    default_task_type: TaskType = "code"


class UpdateProjectBody(Strict, frozen=True):
    name: Name | None = None
    source: SourceBody | None = None
    description: ShortText | None = None
    default_task_type: TaskType | None = None


class ReasonBody(Strict, frozen=True):
    reason: ShortText = ""


class LimitsBody(Strict, frozen=True):
    deadline_seconds: Positive | None = None
    idle_seconds: Positive | None = None
    max_tokens: Positive | None = None
    max_cost_usd: Annotated[float, Meta(gt=0)] | None = None
    max_events: Positive | None = None
    max_bytes: Positive | None = None

    def limits(self) -> RunLimits:
        return msgspec.convert(msgspec.structs.asdict(self), RunLimits)


class StartRunBody(Strict, frozen=True):
    project_id: ProjectId
    instructions: Instructions
    task_type: TaskType = "code"
    reference_run_id: RunId | None = None
    from_run_id: RunId | None = None
    pattern_ids: Annotated[list[PatternId], Meta(max_length=10)] = []
    auto_patterns: bool = False
    limits: LimitsBody = LimitsBody()


class CreateKeyBody(Strict, frozen=True):
    name: Name
    role: Role
    expires_at: Annotated[datetime, Meta(tz=True)] | None = None


class TicketBody(Strict, frozen=True):
    """A ticket for one run's event socket (`run_id`), or for the tenant feed when it is absent."""

    run_id: RunId | None = None


async def body(request: web.Request, kind: type[T], *, optional: bool = False) -> T:
    """The JSON body decoded as `kind`; an empty body is `{}` when `optional`."""
    raw = await request.read()
    if not raw and optional:
        raw = b"{}"
    elif request.content_type != "application/json":
        raise Problem("unsupported-media-type", "send the body as application/json")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise Problem("invalid-request", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise Problem("invalid-request", "the body is not valid JSON") from exc


def path(request: web.Request, name: str, kind: object) -> str:
    """A path parameter validated against its constrained type (e.g. `RunId`)."""
    value = request.match_info[name]
    try:
        return str(msgspec.convert(value, kind))
    except msgspec.ValidationError as exc:
        raise Problem("invalid-request", f"{name} {value[:80]!r} is not valid: {exc}") from exc


def query(request: web.Request, kind: type[T], *, drop: tuple[str, ...] = ("min_seq", "wait")) -> T:
    """The query string decoded as `kind` (unknown parameters refused), minus the gateway's own."""
    values: dict[str, str] = {}
    for key in request.query:
        if key in drop:
            continue
        if len(request.query.getall(key)) > 1:
            raise Problem("invalid-request", f"query parameter {key!r} is given more than once")
        values[key] = request.query[key]
    try:
        return msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise Problem("invalid-request", f"query string: {exc}") from exc


def number(request: web.Request, name: str, *, most: float) -> float | None:
    """A non-negative numeric query parameter (`?wait=`, `?min_seq=`), capped at `most`."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Problem("invalid-request", f"{name} must be a number") from None
    if not 0 <= value <= most:
        raise Problem("invalid-request", f"{name} must be between 0 and {most:g}")
    return value
