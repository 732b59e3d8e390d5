"""Every REST operation in `/openapi.json`, fuzzed from its schema with valid and mutated requests, answers
below 500 with no internals in its body, and every error it gives is a complete problem+json.

Hypothesis drives the requests from a worker thread and hands each one to the test's event loop, so one
running system (nats-server, registry, projector, gateway) serves every example.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

import gateway
from tests.gateway._problems import FORBIDDEN_WORDS
from tests.gateway.conftest import System

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
WEBSOCKETS = {"/v1/runs/{run_id}/events", "/v1/events"}
# /v1 routes /openapi.json leaves out would be fuzzed too, with these bodies (none today: see the test).
UNDOCUMENTED: dict[tuple[str, str], type | None] = {}
EXCEPTION_PATH = re.compile(r"\b[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+\.[A-Z]\w*(?:Error|Exception)\b")
ID_LIKE = st.from_regex(r"\A(prj|run|pat|key|cmd)_[0-9A-HJKMNP-TV-Z]{26}\Z", fullmatch=True)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=140)


@pytest.fixture
def gateway_settings() -> gateway.Settings:
    """No rate limit in the way, and short waits so a fuzzed `?wait=` or `?min_seq=` stays quick."""
    return gateway.Settings(
        port=0, rate_per_second=1e6, rate_burst=1_000_000, max_wait_seconds=0.3, query_wait_ms=200
    )


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    params: tuple[dict[str, Any], ...]
    body: dict[str, Any] | None  # the JSON schema of the body, $refs resolvable at its root


@dataclass(frozen=True)
class Call:
    method: str
    url: str  # percent-encoded path and query
    headers: tuple[tuple[str, str], ...]
    body: bytes | None

    def __str__(self) -> str:
        body = "" if self.body is None else f" body={self.body[:300]!r}"
        return f"{self.method.upper()} {self.url} headers={dict(self.headers)}{body}"


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


def operations(document: dict[str, Any], routes: set[tuple[str, str]]) -> list[Operation]:
    """The document's operations (WebSockets aside), then the API routes it leaves out."""
    components = {"components": document["components"]}
    found: list[Operation] = []
    for path, methods in document["paths"].items():
        for method, spec in methods.items():
            if path in WEBSOCKETS:
                continue
            content = spec.get("requestBody", {}).get("content", {}).get("application/json")
            body = {**content["schema"], **components} if content else None
            found.append(Operation(method, path, tuple(spec["parameters"]), body))
    for method, path in sorted(routes - documented(document)):
        if path.startswith("/v1/") and path not in WEBSOCKETS:
            names = [n.strip("{}") for n in path.split("/") if n.startswith("{")]
            params = tuple({"name": n, "in": "path", "schema": {"type": "string"}} for n in names)
            kind = UNDOCUMENTED.get((method, path))
            body = gateway_schema(kind) if kind else ({} if method != "get" else None)
            found.append(Operation(method, path, params, body))
    return found


def gateway_schema(kind: type) -> dict[str, Any]:
    (schema,), components = msgspec.json.schema_components([kind], ref_template="#/components/schemas/{name}")
    return {**schema, "components": {"schemas": components}}


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, methods in document["paths"].items() for method in methods}


def router_operations(system: System) -> set[tuple[str, str]]:
    routes = system.client.server.app.router.routes()
    return {(r.method.lower(), r.resource.canonical) for r in routes if r.resource and r.method != "HEAD"}


def as_query(value: Any) -> str | None:
    """A JSON value as a query-string value; null means the parameter is left out."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value)


def path_value(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(known), ID_LIKE, st.text(min_size=1, max_size=40))


def query_values(schema: dict[str, Any]) -> st.SearchStrategy[str | None]:
    valid = from_schema(schema).map(as_query)
    return st.one_of(valid, st.text(max_size=30), st.sampled_from(["", "-1", "1e309", "nan", "0x10"]))


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[Any], schema: dict[str, Any]) -> Any:
    """A valid body with one field dropped, retyped or added, or something else entirely."""
    value = draw(valid)
    if not isinstance(value, dict) or draw(st.integers(0, 3)) == 0:
        return draw(JSON)
    names = sorted(set(value) | set(schema.get("properties", {})))
    action = draw(st.sampled_from(["drop", "retype", "extra"]))
    if action == "drop" and value:
        value.pop(draw(st.sampled_from(sorted(value))))
    elif action == "retype" and names:
        value[draw(st.sampled_from(names))] = draw(JSON)
    else:
        value[draw(st.text(max_size=12))] = draw(JSON)
    return value


def bodies(schema: dict[str, Any]) -> st.SearchStrategy[tuple[bytes, str]]:
    valid = from_schema(schema)
    as_json = st.one_of(valid, mutated(valid, schema), JSON).map(lambda v: json.dumps(v).encode())
    garbage = st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"{", b"[]", b"NaN", b'{"a":1e999}']))
    return st.one_of(
        st.tuples(as_json, st.just("application/json")),
        st.tuples(garbage, st.just("application/json")),
        st.tuples(as_json, st.sampled_from(["text/plain", "application/x-www-form-urlencoded"])),
    )


def calls(operation: Operation, known: list[str], token: str) -> st.SearchStrategy[Call]:
    @st.composite
    def build(draw: st.DrawFn) -> Call:
        path = operation.path
        query: list[tuple[str, str]] = []
        headers = [("Authorization", f"Bearer {token}")]
        for param in operation.params:
            if param["in"] == "path":
                value = draw(path_value(known))
                path = path.replace("{" + param["name"] + "}", quote(value, safe=""))
            elif draw(st.booleans()):
                if param["in"] == "query":
                    value = draw(query_values(param["schema"]))
                    if value is not None:
                        query.append((param["name"], value))
                else:
                    headers.append((param["name"], draw(HEADER_TEXT)))
        if draw(st.integers(0, 4)) == 0:  # an unknown or repeated parameter now and then
            query.append((draw(st.sampled_from(["limit", "x", "after", "wait"])), draw(st.text(max_size=8))))
        body = None
        if operation.body is not None:
            body, content_type = draw(bodies(operation.body))
            headers.append(("Content-Type", content_type))
        url = path + ("?" + urlencode(query) if query else "")
        return Call(operation.method, url, tuple(headers), body)

    return build()


def check(call: Call, answer: Answer) -> None:
    """Below 500 (bar a `min_seq` past the log), no internals, errors as complete problems."""
    text = answer.body.decode("utf-8", "replace")
    said = str(call) + (call.body or b"").decode("utf-8", "replace")
    assert answer.status < 500 or not_caught_up(call, answer), f"{call} -> {answer.status} {text[:500]}"
    for word in (*FORBIDDEN_WORDS, *EXCEPTION_PATH.findall(text)):
        assert word not in text or word in said, f"{call} -> {answer.status} leaks {word!r}: {text[:500]}"
    if answer.status >= 400:
        assert answer.content_type == "application/problem+json", f"{call} -> {answer}"
        problem = json.loads(answer.body)
        assert {"type", "title", "status", "detail"} <= problem.keys(), f"{call} -> {text}"
        assert problem["status"] == answer.status, f"{call} -> {text}"
        assert problem["type"].startswith("/problems/"), f"{call} -> {text}"


def not_caught_up(call: Call, answer: Answer) -> bool:
    """A read asking for a `min_seq` the read models have not reached is a documented 503."""
    return answer.status == 503 and "min_seq=" in call.url and b"/problems/not-caught-up" in answer.body


def fuzz(operation: Operation, known: list[str], token: str, send: Callable[[Call], Answer]) -> None:
    @FUZZ
    @given(call=calls(operation, known, token))
    def one(call: Call) -> None:
        check(call, send(call))

    one()


async def send(system: System, call: Call) -> Answer:
    url = system.client.make_url(call.url)
    async with system.client.session.request(
        call.method, url, headers=dict(call.headers), data=call.body
    ) as response:
        return Answer(response.status, response.content_type, await response.read())


async def seed(system: System) -> list[str]:
    """Real ids for path parameters: a project, a run of it and a viewer key (never the admin's key)."""
    project = {"name": "fuzz", "source": {"kind": "local", "path": "/srv/fuzz"}}
    made = await system.client.post("/v1/projects", json=project, headers=system.auth())
    assert made.status == 202, await made.text()
    project_id = (await made.json())["id"]
    run = {"project_id": project_id, "instructions": "fuzz"}
    started = await system.client.post("/v1/runs", json=run, headers=system.auth())
    assert started.status == 202, await started.text()
    viewer = await system.key("viewer")
    return [project_id, (await started.json())["id"], viewer.split(".")[0], "diff.patch", "README.md"]


async def test_every_operation_survives_schema_fuzzing(system: System) -> None:
    """Valid and mutated path, query, header and body values for each operation: no 5xx, no internals."""
    document = await (await system.client.get("/openapi.json")).json()
    known = await seed(system)
    loop = asyncio.get_running_loop()

    def deliver(call: Call) -> Answer:
        return asyncio.run_coroutine_threadsafe(send(system, call), loop).result(timeout=30)

    failures: list[str] = []
    for operation in operations(document, router_operations(system)):
        try:
            await asyncio.to_thread(fuzz, operation, known, system.admin, deliver)
        except AssertionError as failure:
            failures.append(f"{operation.method.upper()} {operation.path}: {failure}")
    assert not failures, "\n".join(failures)


async def test_openapi_lists_every_api_route(system: System) -> None:
    """/openapi.json documents every /v1 route the gateway serves."""
    document = await (await system.client.get("/openapi.json")).json()
    missing = {op for op in router_operations(system) if op[1].startswith("/v1/")} - documented(document)
    assert sorted(missing) == sorted(UNDOCUMENTED), f"routes missing from /openapi.json: {sorted(missing)}"
