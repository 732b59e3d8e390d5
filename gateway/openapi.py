"""`/openapi.json`: the REST surface, with request bodies and query parameters generated from the
msgspec Structs the handlers decode (so the document cannot drift from what is accepted)."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from gateway import bodies
from gateway.patterns import EditPatternBody
from gateway.problems import CATALOG
from gateway.runs import PageParams
from schemas.queries import ListPatterns, ListProjects, ListRuns, Sql, Stats

# method, path, summary, role needed, body, query parameters, success status
Operation = tuple[str, str, str, str, type | None, type | None, int]
OPERATIONS: list[Operation] = [
    ("post", "/v1/projects", "Create a project", "operator", bodies.CreateProjectBody, None, 202),
    ("get", "/v1/projects", "List projects", "viewer", None, ListProjects, 200),
    ("get", "/v1/projects/{project_id}", "Get a project", "viewer", None, None, 200),
    (
        "patch",
        "/v1/projects/{project_id}",
        "Update a project",
        "operator",
        bodies.UpdateProjectBody,
        None,
        202,
    ),
    (
        "post",
        "/v1/projects/{project_id}/archive",
        "Archive a project",
        "operator",
        bodies.ReasonBody,
        None,
        202,
    ),
    ("post", "/v1/runs", "Start a run", "operator", bodies.StartRunBody, None, 202),
    ("get", "/v1/runs", "List runs (newest first, cursor paging)", "viewer", None, ListRuns, 200),
    ("get", "/v1/runs/{run_id}", "Get a run", "viewer", None, None, 200),
    ("post", "/v1/runs/{run_id}/cancel", "Cancel a run", "operator", bodies.ReasonBody, None, 202),
    ("get", "/v1/runs/{run_id}/steps", "A run's steps in log order", "viewer", None, PageParams, 200),
    ("get", "/v1/runs/{run_id}/model-calls", "A run's model calls", "viewer", None, PageParams, 200),
    ("get", "/v1/runs/{run_id}/artifacts", "A run's artifacts", "viewer", None, PageParams, 200),
    ("get", "/v1/runs/{run_id}/artifacts/{name}", "Download an artifact", "viewer", None, None, 200),
    ("get", "/v1/runs/{run_id}/diff", "The run's final diff", "viewer", None, None, 200),
    ("get", "/v1/runs/{run_id}/files", "Files of the run's final workspace", "viewer", None, None, 200),
    ("get", "/v1/runs/{run_id}/files/{path}", "Download a workspace file", "viewer", None, None, 200),
    ("get", "/v1/stats", "Dashboard aggregates", "viewer", None, Stats, 200),
    ("post", "/v1/sql", "Analyst SQL (one read-only SELECT)", "analyst", Sql, None, 200),
    ("get", "/v1/patterns", "List patterns", "viewer", None, ListPatterns, 200),
    ("get", "/v1/patterns/{pattern_id}", "Get a pattern", "viewer", None, None, 200),
    ("get", "/v1/patterns/{pattern_id}/preview", "The block a run gets (text)", "viewer", None, None, 200),
    (
        "patch",
        "/v1/patterns/{pattern_id}",
        "Edit a pattern (a new version)",
        "operator",
        EditPatternBody,
        None,
        202,
    ),
    (
        "post",
        "/v1/patterns/{pattern_id}/retire",
        "Retire a pattern",
        "operator",
        bodies.ReasonBody,
        None,
        202,
    ),
    (
        "post",
        "/v1/patterns/{pattern_id}/restore",
        "Restore a pattern",
        "operator",
        bodies.ReasonBody,
        None,
        202,
    ),
    ("post", "/v1/keys", "Create an API key (shown once)", "admin", bodies.CreateKeyBody, None, 201),
    ("get", "/v1/keys", "List the tenant's API keys", "admin", None, None, 200),
    ("get", "/v1/keys/{key_id}", "Get an API key", "admin", None, None, 200),
    ("post", "/v1/keys/{key_id}/revoke", "Revoke an API key", "admin", bodies.ReasonBody, None, 200),
    ("post", "/v1/tickets", "A single-use WebSocket ticket", "viewer", bodies.TicketBody, None, 201),
    (
        "get",
        "/v1/runs/{run_id}/events",
        "WebSocket: one run's events (see README)",
        "viewer",
        None,
        None,
        101,
    ),
    ("get", "/v1/events", "WebSocket: the tenant's live feed (see README)", "viewer", None, None, 101),
]
COMMANDS = {"post", "patch"}


@functools.cache
def document_bytes() -> bytes:
    return msgspec.json.encode(document())


def document() -> dict[str, Any]:
    types = sorted({t for op in OPERATIONS for t in op[4:6] if t is not None}, key=lambda t: t.__name__)
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    by_type = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, role, body, params, status in OPERATIONS:
        paths.setdefault(path, {})[method] = _operation(
            method, path, summary, role, body, params, status, by_type, components
        )
    problem = {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "enum": [f"/problems/{slug}" for slug in CATALOG]},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "request_id": {"type": "string"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "codex-swarm gateway", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {**components, "Problem": problem},
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }


def _operation(
    method: str,
    path: str,
    summary: str,
    role: str,
    body: type | None,
    params: type | None,
    status: int,
    by_type: dict[type, Any],
    components: dict[str, Any],
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "description": f"Needs role {role} or above.",
        "parameters": [
            {"name": name.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
            for name in path.split("/")
            if name.startswith("{")
        ],
        "responses": {
            str(status): {"description": "success"},
            "default": {
                "description": "a problem",
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            },
        },
    }
    if params is not None:
        props = components[params.__name__].get("properties", {})
        operation["parameters"] += [{"name": n, "in": "query", "schema": s} for n, s in props.items()]
    if method in COMMANDS and path not in {"/v1/tickets", "/v1/sql"}:
        operation["parameters"].append(
            {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 128}}
        )
        operation["parameters"].append(
            {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0}}
        )
    if method == "get" and params is not None:
        operation["parameters"].append(
            {"name": "min_seq", "in": "query", "schema": {"type": "integer", "minimum": 0}}
        )
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": by_type[body]}},
        }
    return operation
