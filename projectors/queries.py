"""The queries a projector replica answers, each scoped to one tenant, run on a DuckDB cursor.

A query is a params Struct (unknown fields forbidden, sizes bounded) and a function
`(cursor, tenant, params) -> data`; `answer` finds one by name, decodes its params and runs it. Every
SQL statement filters `tenant = $tenant` and passes every value as a parameter.

Lists page: pass a reply's `next_cursor` / `next_after_seq` / `next_after` back as `cursor` / `after_seq`
/ `after`; it is `null` on the last page.

QueryError          type on the wire
├── BadRequest      bad_request    unknown query, params that do not decode, a foreign cursor
├── NotFound        not_found      no such run, project or pattern in this tenant
├── TooSlow         timeout        analyst SQL ran past its time limit and was stopped
├── NotCaughtUp     not_caught_up  the replica did not reach `min_seq` within the wait
├── Unavailable     unavailable    no replica answered in time (raised by the client)
└── Internal        internal       the replica failed
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

import duckdb
import msgspec

from projectors.errors import ProjectorError, SqlError, SqlTimeout
from projectors.sql import run_sql
from schemas.queries import (
    GetPattern,
    GetProject,
    GetRun,
    ListPatterns,
    ListProjects,
    ListRuns,
    Params,
    RunPage,
    Sql,
    Stats,
)
from schemas.types import RunId, UtcTime

Cursor = duckdb.DuckDBPyConnection
Data = dict[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # sorts runs never queued (no start command seen) last
_STATS_ROWS = 2_000


class QueryError(ProjectorError):
    """Root of the errors a query answers with; `type` is its stable name on the wire."""

    type: ClassVar[str] = "internal"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(QueryError):
    type = "bad_request"


class NotFound(QueryError):
    type = "not_found"


class TooSlow(QueryError):
    type = "timeout"


class NotCaughtUp(QueryError):
    type = "not_caught_up"


class Unavailable(QueryError):
    type = "unavailable"


class Internal(QueryError):
    type = "internal"


ERRORS: dict[str, type[QueryError]] = {
    cls.type: cls for cls in (BadRequest, NotFound, TooSlow, NotCaughtUp, Unavailable, Internal)
}


class _RunKey(msgspec.Struct, frozen=True, array_like=True):
    """What a `list_runs` cursor encodes: the sort key of the last row returned."""

    queued_at: UtcTime
    run_id: RunId


# Handlers

_LIST_RUNS = """SELECT * EXCLUDE (instructions, summary, final_message, sort_key) FROM (
  SELECT *, coalesce(queued_at, $epoch) AS sort_key, left(instructions, 120) AS title FROM runs
  WHERE tenant = $tenant
  AND ($project_id IS NULL OR project_id = $project_id) AND ($status IS NULL OR status = $status)
  AND ($task_type IS NULL OR task_type = $task_type)
  AND ($queued_after IS NULL OR queued_at >= $queued_after)
  AND ($queued_before IS NULL OR queued_at < $queued_before))
WHERE $cursor IS NULL OR (sort_key, run_id) < ($cursor, $cursor_run)
ORDER BY sort_key DESC, run_id DESC LIMIT $limit"""


def list_runs(cur: Cursor, tenant: str, p: ListRuns) -> Data:
    key = _decode_key(p.cursor) if p.cursor else None
    at, run_id = (key.queued_at, key.run_id) if key else (None, None)
    params = _params(p, tenant, limit=p.limit + 1, epoch=_EPOCH, cursor=at, cursor_run=run_id)
    rows = _rows(cur, _LIST_RUNS, **params)
    items, more = rows[: p.limit], len(rows) > p.limit
    return {"items": items, "next_cursor": _encode_key(items[-1]) if more else None}


def get_run(cur: Cursor, tenant: str, p: GetRun) -> Data:
    run = _one(cur, "SELECT * FROM runs WHERE tenant = $tenant AND run_id = $id", tenant, p.run_id)
    if run["summary"] is not None:
        run["summary"] = msgspec.json.decode(run["summary"])
    return run


def _run_page(table: str) -> Callable[[Cursor, str, RunPage], Data]:
    sql = (
        f"SELECT * FROM {table} WHERE tenant = $tenant AND run_id = $run_id "  # noqa: S608 - names are ours
        "AND seq > $after_seq ORDER BY seq LIMIT $limit"
    )

    def page(cur: Cursor, tenant: str, p: RunPage) -> Data:
        _one(cur, "SELECT run_id FROM runs WHERE tenant = $tenant AND run_id = $id", tenant, p.run_id)
        rows = _rows(cur, sql, **_params(p, tenant, limit=p.limit + 1))
        items = rows[: p.limit]
        return {"items": items, "next_after_seq": items[-1]["seq"] if len(rows) > p.limit else None}

    return page


_LIST_PROJECTS = """SELECT * FROM projects WHERE tenant = $tenant AND ($status IS NULL OR status = $status)
AND ($after IS NULL OR project_id > $after) ORDER BY project_id LIMIT $limit"""


def list_projects(cur: Cursor, tenant: str, p: ListProjects) -> Data:
    rows = _rows(cur, _LIST_PROJECTS, **_params(p, tenant, limit=p.limit + 1))
    return _after_page(rows, p.limit, "project_id")


def get_project(cur: Cursor, tenant: str, p: GetProject) -> Data:
    return _one(
        cur, "SELECT * FROM projects WHERE tenant = $tenant AND project_id = $id", tenant, p.project_id
    )


_DAILY = {
    "runs_by_status_day": "SELECT day, status, runs FROM runs_by_status_day WHERE tenant = $tenant "
    "AND ($since IS NULL OR day >= $since) ORDER BY day DESC NULLS LAST, status LIMIT $rows",
    "usage_by_project_day": "SELECT project_id, day, runs, tokens_in, tokens_cached, tokens_out, cost_usd "
    "FROM usage_by_project_day WHERE tenant = $tenant AND ($since IS NULL OR day >= $since) "
    "ORDER BY day DESC NULLS LAST, project_id LIMIT $rows",
}
_ALL_TIME = {
    "durations": "SELECT project_id, task_type, runs, p50_ms, p95_ms FROM run_durations "
    "WHERE tenant = $tenant ORDER BY project_id, task_type LIMIT $rows",
    "failure_reasons": "SELECT failure_reason, runs FROM failure_reasons WHERE tenant = $tenant "
    "ORDER BY runs DESC, failure_reason LIMIT $rows",
    "queue_waits": "SELECT project_id, runs, p50_ms, p95_ms, max_ms FROM queue_waits "
    "WHERE tenant = $tenant ORDER BY project_id LIMIT $rows",
    "patterns": "SELECT p.pattern_id, p.name, p.task_type, p.status, s.uses, s.success_rate, s.uplift, "
    "s.duration_saved_ms, s.tokens_saved, s.last_used_at, s.flagged FROM patterns p JOIN pattern_stats s "
    "ON s.tenant = p.tenant AND s.pattern_id = p.pattern_id WHERE p.tenant = $tenant "
    "ORDER BY s.flagged DESC, s.uses DESC, p.pattern_id LIMIT $rows",
}


def stats(cur: Cursor, tenant: str, p: Stats) -> Data:
    """Each series is capped at `_STATS_ROWS` rows, newest days first."""
    limits = {"tenant": tenant, "rows": _STATS_ROWS}
    daily = {name: _rows(cur, sql, since=p.since, **limits) for name, sql in _DAILY.items()}
    return daily | {name: _rows(cur, sql, **limits) for name, sql in _ALL_TIME.items()}


_STATS_COLUMNS = (
    "s.uses, s.finished, s.succeeded, s.success_rate, s.median_duration_ms, s.median_tokens, "
    "s.baseline_runs, s.baseline_success_rate, s.baseline_median_duration_ms, s.baseline_median_tokens, "
    "s.uplift, s.duration_saved_ms, s.tokens_saved, s.last_used_at, s.flagged"
)
_PATTERNS = f"""SELECT p.*, {_STATS_COLUMNS} FROM patterns p
LEFT JOIN pattern_stats s ON s.tenant = p.tenant AND s.pattern_id = p.pattern_id WHERE p.tenant = $tenant"""  # noqa: S608
_LIST_PATTERNS = f"""{_PATTERNS}
AND ($project_id IS NULL OR p.project_id = $project_id) AND ($status IS NULL OR p.status = $status)
AND ($task_type IS NULL OR p.task_type = $task_type)
AND ($after IS NULL OR p.pattern_id > $after) ORDER BY p.pattern_id LIMIT $limit"""


def list_patterns(cur: Cursor, tenant: str, p: ListPatterns) -> Data:
    """Patterns with their analytics (`pattern_stats`); steps and variables are JSON text."""
    rows = _rows(cur, _LIST_PATTERNS, **_params(p, tenant, limit=p.limit + 1))
    return _after_page(rows, p.limit, "pattern_id")


def get_pattern(cur: Cursor, tenant: str, p: GetPattern) -> Data:
    """One pattern with its analytics, its steps and variables decoded, and every version, oldest first."""
    pattern = _one(cur, f"{_PATTERNS} AND p.pattern_id = $id", tenant, p.pattern_id)
    versions = _rows(
        cur,
        "SELECT * EXCLUDE (tenant) FROM pattern_versions WHERE tenant = $tenant AND pattern_id = $id "
        "ORDER BY version",
        tenant=tenant,
        id=p.pattern_id,
    )
    for row in (pattern, *versions):
        row["steps"] = msgspec.json.decode(row["steps"]) if row["steps"] else []
        row["variables"] = msgspec.json.decode(row["variables"]) if row["variables"] else []
    return pattern | {"versions": versions}


# The registry

P = TypeVar("P", bound=Params)


class Query(Generic[P]):
    """One query: how its params decode and what answers it."""

    def __init__(self, params: type[P], run: Callable[[Cursor, str, P], Data]) -> None:
        self._decoder = msgspec.json.Decoder(params)
        self._run = run

    def __call__(self, cur: Cursor, tenant: str, params: bytes) -> Data:
        try:
            decoded = self._decoder.decode(params)
        except msgspec.ValidationError as exc:
            raise BadRequest(str(exc)) from exc
        except msgspec.DecodeError as exc:
            raise BadRequest(f"params are not valid JSON: {exc}") from exc
        return self._run(cur, tenant, decoded)


def sql(cur: Cursor, tenant: str, p: Sql) -> Data:
    try:
        result = run_sql(cur, tenant, p.sql, max_rows=p.max_rows, timeout_s=p.timeout_s, fmt=p.format)
    except SqlTimeout as exc:
        raise TooSlow(str(exc)) from exc
    except SqlError as exc:  # rejected or failed: the analyst's statement is at fault
        raise BadRequest(str(exc)) from exc
    data: Data = msgspec.to_builtins(result)
    return data


QUERIES: dict[str, Query[Any]] = {
    "sql": Query(Sql, sql),
    "list_runs": Query(ListRuns, list_runs),
    "get_run": Query(GetRun, get_run),
    "run_steps": Query(RunPage, _run_page("steps")),
    "run_model_calls": Query(RunPage, _run_page("model_calls")),
    "run_artifacts": Query(RunPage, _run_page("artifacts")),
    "list_projects": Query(ListProjects, list_projects),
    "get_project": Query(GetProject, get_project),
    "stats": Query(Stats, stats),
    "list_patterns": Query(ListPatterns, list_patterns),
    "get_pattern": Query(GetPattern, get_pattern),
}


def answer(cur: Cursor, tenant: str, name: str, params: bytes) -> Data:
    """Run query `name` for `tenant` (already validated) with JSON `params`; raises `QueryError`s."""
    query = QUERIES.get(name)
    if query is None:
        raise BadRequest(f"unknown query {name!r}; known: {', '.join(sorted(QUERIES))}")
    return query(cur, tenant, params)


# Helpers


def _params(params: Params, tenant: str, **extra: Any) -> Data:
    """The SQL parameters of a query: its params' fields (by name), the tenant and `extra`."""
    return msgspec.structs.asdict(params) | {"tenant": tenant} | extra


def _rows(cur: Cursor, sql: str, **params: Any) -> list[Data]:
    cur.execute(sql, params)
    names = [column[0] for column in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _one(cur: Cursor, sql: str, tenant: str, key: str) -> Data:
    rows = _rows(cur, sql, tenant=tenant, id=key)
    if not rows:
        raise NotFound(f"{key} does not exist in tenant {tenant}")
    return rows[0]


def _after_page(rows: list[Data], limit: int, key: str) -> Data:
    items = rows[:limit]
    return {"items": items, "next_after": items[-1][key] if len(rows) > limit else None}


def _encode_key(row: Data) -> str:
    raw = msgspec.json.encode(_RunKey(row["queued_at"] or _EPOCH, row["run_id"]))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_key(token: str) -> _RunKey:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return msgspec.json.decode(raw, type=_RunKey)
    except (binascii.Error, ValueError, msgspec.MsgspecError) as exc:
        raise BadRequest("cursor is not one this service issued") from exc
