"""The queries a projector replica answers: their parameters, as the gateway and the CLI send them.

Each is a Struct with unknown fields forbidden and sizes bounded; the projectors answer them
(`projectors/queries.py`) and clients encode them (`projectors.service.query`, later the gateway).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from schemas.types import Count, PatternId, ProjectId, RunId, TaskType, UtcTime

Limit = Annotated[int, Meta(ge=1, le=500)]
PageToken = Annotated[str, Meta(min_length=1, max_length=200)]
Status = Annotated[str, Meta(pattern="^[a-z_]{1,32}$")]
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]


class Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ListRuns(Params, frozen=True):
    """Runs newest first; `queued_after` is inclusive, `queued_before` exclusive."""

    project_id: ProjectId | None = None
    status: RunStatus | None = None
    task_type: TaskType | None = None
    queued_after: UtcTime | None = None
    queued_before: UtcTime | None = None
    cursor: PageToken | None = None
    limit: Limit = 50


class GetRun(Params, frozen=True):
    run_id: RunId


class RunPage(Params, frozen=True):
    """A run's steps, model calls or artifacts in log order, after `after_seq`."""

    run_id: RunId
    after_seq: Count = 0
    limit: Limit = 100


class ListProjects(Params, frozen=True):
    status: Literal["active", "archived"] | None = None
    after: ProjectId | None = None
    limit: Limit = 100


class GetProject(Params, frozen=True):
    project_id: ProjectId


class Stats(Params, frozen=True):
    """Dashboard aggregates; `since` limits the per-day series, the others cover all time."""

    since: date | None = None


class ListPatterns(Params, frozen=True):
    project_id: ProjectId | None = None
    status: Status | None = None
    task_type: TaskType | None = None
    after: PatternId | None = None
    limit: Limit = 100


class GetPattern(Params, frozen=True):
    pattern_id: PatternId


class Sql(Params, frozen=True):
    """Read-only analyst SQL over the tenant's rows; the bounds are the caps a caller may ask for."""

    sql: Annotated[str, Meta(min_length=1, max_length=100_000)]
    format: Literal["json", "csv"] = "json"
    max_rows: Annotated[int, Meta(ge=1, le=100_000)] = 10_000
    timeout_s: Annotated[float, Meta(gt=0, le=60)] = 10.0
