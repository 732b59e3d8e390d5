"""Every /v1 route of the running app against every kind of key: 401s, the README's role table, tenancy.

The routes come from the app's router, so a route added later without a row in `RULES` fails the matrix.
Path parameters are filled with the ids of a real project, run (with its artifacts and workspace),
pattern and key of tenant `acme`; `globex`'s admin then calls the same URLs and must see nothing of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import ClientResponse, WSMsgType

import gateway
from schemas import Kind, Role, subjects
from schemas.ids import ulid
from swarm import keys
from tests.gateway._problems import problem
from tests.gateway._runs import FakeExecutor, workspace_archive
from tests.gateway.conftest import TENANT, System
from tests.gateway.test_patterns import _extracted

OTHER = "globex"
ROLES: tuple[Role, ...] = ("viewer", "analyst", "operator", "admin")
# The README's role table: the least role each route needs, and what an allowed key gets.
ALLOWED: dict[str, set[str]] = {
    "viewer": set(ROLES),
    "analyst": {"analyst", "admin"},
    "operator": {"operator", "admin"},
    "admin": {"admin"},
}
SOCKET = 0  # a WebSocket route: first-frame auth, checked by close codes
RULES: dict[tuple[str, str], tuple[str, int]] = {
    ("POST", "/v1/projects"): ("operator", 202),
    ("PATCH", "/v1/projects/{project_id}"): ("operator", 202),
    ("POST", "/v1/projects/{project_id}/archive"): ("operator", 202),
    ("GET", "/v1/projects"): ("viewer", 200),
    ("GET", "/v1/projects/{project_id}"): ("viewer", 200),
    ("POST", "/v1/runs"): ("operator", 202),
    ("POST", "/v1/runs/{run_id}/cancel"): ("operator", 202),
    ("GET", "/v1/runs"): ("viewer", 200),
    ("GET", "/v1/runs/{run_id}"): ("viewer", 200),
    ("GET", "/v1/runs/{run_id}/steps"): ("viewer", 200),
    ("GET", "/v1/runs/{run_id}/model-calls"): ("viewer", 200),
    ("GET", "/v1/runs/{run_id}/artifacts"): ("viewer", 200),
    ("GET", "/v1/runs/{run_id}/diff"): ("viewer", 200),
    ("GET", "/v1/runs/{run_id}/artifacts/{name}"): ("viewer", 200),
    ("GET", "/v1/runs/{run_id}/files"): ("viewer", 200),
    ("GET", "/v1/runs/{run_id}/files/{path}"): ("viewer", 200),
    ("GET", "/v1/stats"): ("viewer", 200),
    ("GET", "/v1/patterns"): ("viewer", 200),
    ("GET", "/v1/patterns/{pattern_id}"): ("viewer", 200),
    ("PATCH", "/v1/patterns/{pattern_id}"): ("operator", 202),
    ("POST", "/v1/patterns/{pattern_id}/retire"): ("operator", 202),
    ("POST", "/v1/patterns/{pattern_id}/restore"): ("operator", 202),
    ("GET", "/v1/patterns/{pattern_id}/preview"): ("viewer", 200),
    ("POST", "/v1/sql"): ("analyst", 200),
    ("POST", "/v1/keys"): ("admin", 201),
    ("GET", "/v1/keys"): ("admin", 200),
    ("GET", "/v1/keys/{key_id}"): ("admin", 200),
    ("POST", "/v1/keys/{key_id}/revoke"): ("admin", 200),
    ("POST", "/v1/tickets"): ("viewer", 201),
    ("GET", "/v1/runs/{run_id}/events"): ("viewer", SOCKET),
    ("GET", "/v1/events"): ("viewer", SOCKET),
}
# Routes that list or compute over the caller's tenant: another tenant's key gets its own (empty) view.
TENANT_WIDE = {
    ("GET", "/v1/projects"),
    ("GET", "/v1/runs"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/patterns"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/projects"),
    ("POST", "/v1/sql"),
    ("POST", "/v1/keys"),
}
# Routes whose body names another resource (checked by the test at the end): another tenant's is 404.
UNCHECKED_IDS = {
    ("POST", "/v1/runs"): "a start naming another tenant's project",
}
SECRETS = ("matrix-secret-project", "matrix secret instructions", "SECRET-DIFF", "SECRET-FILE", '"acme"')


@pytest.fixture
def gateway_settings() -> gateway.Settings:
    """No rate limit in the way of ~400 requests, and a short wait for a first frame that never comes."""
    return gateway.Settings(port=0, rate_per_second=10_000.0, rate_burst=10_000, ws_auth_timeout=1.0)


@dataclass
class World:
    """Acme's resources the URLs name, and the keys the matrix calls with."""

    ids: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def url(self, canonical: str) -> str:
        return canonical.format(**self.ids)

    def body(self, method: str, canonical: str) -> dict[str, Any] | None:
        bodies: dict[tuple[str, str], dict[str, Any]] = {
            ("POST", "/v1/projects"): {"name": "made", "source": {"kind": "local", "path": "/srv/made"}},
            ("PATCH", "/v1/projects/{project_id}"): {"description": "edited"},
            ("POST", "/v1/runs"): {"project_id": self.ids["project_id"], "instructions": "again"},
            ("PATCH", "/v1/patterns/{pattern_id}"): {"summary": "edited"},
            ("POST", "/v1/sql"): {"sql": "SELECT run_id, instructions FROM runs"},
            ("POST", "/v1/keys"): {"name": "made", "role": "viewer"},
            ("POST", "/v1/tickets"): {"run_id": self.ids["run_id"]},
        }
        return bodies.get((method, canonical))


async def acme_world(system: System) -> World:
    """A project, a finished run with a diff and a workspace, a pattern and a key, all read back once."""
    made = await system.client.post(
        "/v1/projects?wait=10",
        json={"name": "matrix-secret-project", "source": {"kind": "local", "path": "/srv/m"}},
        headers=system.auth(),
    )
    assert made.status == 200, await made.text()
    project_id = (await made.json())["id"]
    body = {"project_id": project_id, "instructions": "matrix secret instructions"}
    started = await system.client.post("/v1/runs", json=body, headers=system.auth())
    assert started.status == 202, await started.text()
    run_id = (await started.json())["id"]
    executor = FakeExecutor(system.conn, TENANT, run_id)
    await executor.start()
    await executor.message(1)
    await executor.artifact("diff.patch", "diff", b"+SECRET-DIFF\n", "text/x-diff")
    archive = workspace_archive({"src/a.py": b"SECRET-FILE\n"})
    await executor.artifact("workspace.tar.gz", "other", archive, "application/gzip")
    await executor.succeed()
    pattern_id = await _extracted(system.conn)
    target = await keys.create(system.conn, TENANT, "target", "viewer")
    head = await system.conn.log.end()
    seen = await system.client.get(f"/v1/runs/{run_id}?min_seq={head}", headers=system.auth())
    assert (await seen.json())["status"] == "succeeded"
    ids = {
        "project_id": project_id,
        "run_id": run_id,
        "pattern_id": pattern_id,
        "key_id": target.key_id,
        "name": "diff.patch",
        "path": "src/a.py",
    }
    return World(ids=ids)


async def refused_tokens(system: System) -> dict[str, str]:
    """Tokens that must all get 401: unknown, revoked admin, expired admin (the roles would allow all)."""
    unknown_id = f"{Kind.KEY}_{ulid(1_600_000_000_000, bytes(10))}"  # old: no wait for a fresh key
    revoked = await keys.create(system.conn, TENANT, "revoked", "admin")
    assert await keys.revoke(system.conn, TENANT, revoked.key_id)
    past = datetime.now(UTC) - timedelta(seconds=1)
    expired = await keys.create(system.conn, TENANT, "expired", "admin", expires_at=past)
    return {
        "unknown key": gateway.new_secret(unknown_id)[0],
        "revoked admin key": revoked.token,
        "expired admin key": expired.token,
    }


def v1_routes(system: System) -> list[tuple[str, str]]:
    """(method, canonical path) of every /v1 route the running app serves, HEAD and OPTIONS aside."""
    found = set()
    for route in system.client.server.app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if canonical.startswith("/v1/") and route.method not in {"HEAD", "OPTIONS"}:
            found.add((route.method, canonical.replace("{path:.+}", "{path}")))
    return sorted(found)


async def test_every_route_is_in_the_matrix(system: System) -> None:
    """Each /v1 route the app serves has a row in RULES, and each row is still a route (no stale rows)."""
    served = set(v1_routes(system))
    assert served - RULES.keys() == set(), "routes missing from the auth matrix: add a row to RULES"
    assert RULES.keys() - served == set(), "rows in RULES that the app no longer serves"


async def test_rest_routes_refuse_bad_keys_enforce_roles_and_tenancy(system: System) -> None:
    """Every REST route: 401 without a valid key, the README's role table, 404 or an own view for globex."""
    world = await acme_world(system)
    refused = await refused_tokens(system)
    roles = {role: await system.key(role) for role in ROLES}
    stranger = await system.key("admin", tenant=OTHER)
    wrong: list[str] = []
    for method, canonical in v1_routes(system):
        if RULES[(method, canonical)][1] == SOCKET:
            continue
        where = f"{method} {canonical}"
        for name, header in BAD_HEADERS.items():
            answer = await call(system, world, method, canonical, header)
            wrong += await _refused(answer, 401, "unauthorized", f"{where} with {name}")
        for name, token in refused.items():
            answer = await call(system, world, method, canonical, _bearer(token))
            wrong += await _refused(answer, 401, "unauthorized", f"{where} with {name}")
        for role in ROLES:
            wrong += await _role(system, world, method, canonical, role, roles[role])
        wrong += await _stranger(system, world, method, canonical, stranger)
    assert not wrong, "\n".join(wrong)


BAD_HEADERS: dict[str, dict[str, str]] = {
    "no key": {},
    "a Basic header": {"Authorization": "Basic YWNtZTpzZWNyZXQ="},
    "an empty Bearer": {"Authorization": "Bearer "},
    "a token not shaped like a key": {"Authorization": "Bearer not-a-key"},
}
# Commands that change a state: a second allowed caller may find it already changed (409 conflict).
TOGGLES = {
    ("POST", "/v1/projects/{project_id}/archive"),
    ("POST", "/v1/patterns/{pattern_id}/retire"),
    ("POST", "/v1/patterns/{pattern_id}/restore"),
}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    system: System, world: World, method: str, canonical: str, headers: dict[str, str]
) -> ClientResponse:
    given = world.body(method, canonical)
    return await system.client.request(method, world.url(canonical), json=given, headers=headers)


async def _refused(answer: ClientResponse, status: int, slug: str, what: str) -> list[str]:
    """[] when `answer` is that problem (problem+json, no internals), else what was wrong."""
    try:
        await problem(answer, status, slug)
    except AssertionError as exc:
        return [f"{what}: expected {status} {slug}: {exc}"]
    return []


async def _role(
    system: System, world: World, method: str, canonical: str, role: str, token: str
) -> list[str]:
    where = f"{method} {canonical} as {role}"
    least, ok = RULES[(method, canonical)]
    answer = await call(system, world, method, canonical, _bearer(token))
    if role not in ALLOWED[least]:
        return await _refused(answer, 403, "forbidden", where)
    if answer.status == 409 and (method, canonical) in TOGGLES:
        return await _refused(answer, 409, "conflict", where)
    return (
        [] if answer.status == ok else [f"{where}: expected {ok}, got {answer.status} {await answer.text()}"]
    )


async def _stranger(system: System, world: World, method: str, canonical: str, token: str) -> list[str]:
    """Globex's admin on acme's URL and body: its own view, or 404; never any of acme's data."""
    where = f"{method} {canonical} as {OTHER}'s admin"
    answer = await call(system, world, method, canonical, _bearer(token))
    text = await answer.text()
    leaked = [s for s in (*SECRETS, *_unnamed(world, method, canonical)) if s in text]
    wrong = [f"{where} answered acme's {leaked}: {text}"] if leaked else []
    if (method, canonical) in UNCHECKED_IDS and answer.status != 404:
        return wrong + await _untouched(system, token)
    if (method, canonical) not in TENANT_WIDE:
        return wrong + await _refused(answer, 404, "not-found", where)
    ok = RULES[(method, canonical)][1]
    return wrong + ([] if answer.status == ok else [f"{where}: expected {ok}, got {answer.status} {text}"])


def _unnamed(world: World, method: str, canonical: str) -> list[str]:
    """Acme's ids the request does not carry (an answer may echo the id it was asked about, nothing more)."""
    sent = f"{canonical} {world.body(method, canonical)}"
    return [value for name, value in world.ids.items() if "{" + name + "}" not in sent and value not in sent]


async def _untouched(system: System, token: str) -> list[str]:
    """Nothing globex's key sent landed in acme's part of the log (its key id would be the actor)."""
    key_id = token.split(".")[0]
    return [
        f"acme's {record.subject} was sent by globex's key"
        async for record in system.conn.log.read(subjects.tenant_log(TENANT))
        if key_id.encode() in record.data
    ]


async def test_socket_routes_close_bad_auth_and_open_for_every_role(system: System) -> None:
    """Both sockets: 4401 for no, unknown, revoked, expired key; 4400 for a bad frame; ready for any role."""
    world = await acme_world(system)
    refused = await refused_tokens(system)
    roles = {role: await system.key(role) for role in ROLES}
    sockets = [world.url(c) for m, c in v1_routes(system) if RULES[(m, c)][1] == SOCKET]
    assert len(sockets) == 2
    for url in sockets:
        assert await _first(system, url, None) == ("close", 4401), f"{url} with no auth frame"
        assert await _first(system, url, {"hello": 1}) == ("close", 4400), f"{url} with a bad frame"
        for name, token in refused.items():
            frame = {"type": "auth", "key": token}
            assert await _first(system, url, frame) == ("close", 4401), f"{url} with {name}"
        for role in ROLES:
            frame = {"type": "auth", "key": roles[role]}
            assert await _first(system, url, frame) == ("frame", "ready"), f"{url} as {role}"


async def test_another_tenants_sockets_see_nothing_of_this_tenant(system: System) -> None:
    """Globex's admin: acme's run socket closes 4404 and gets no ticket; its feed carries only globex."""
    world = await acme_world(system)
    stranger = await system.key("admin", tenant=OTHER)
    run_url = world.url("/v1/runs/{run_id}/events")
    assert await _first(system, run_url, {"type": "auth", "key": stranger}) == ("close", 4404)
    made = await system.client.post(
        "/v1/tickets", json={"run_id": world.ids["run_id"]}, headers=system.auth(stranger)
    )
    await problem(made, 404, "not-found")  # no ticket for a run the caller's tenant does not have

    ws = await system.client.ws_connect("/v1/events")
    await ws.send_json({"type": "auth", "key": stranger})
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "ready"
    acme_run = (
        await (
            await system.client.post("/v1/runs", json=world.body("POST", "/v1/runs"), headers=system.auth())
        ).json()
    )["id"]
    await FakeExecutor(system.conn, TENANT, acme_run).start()
    body = {"name": "globex-own", "source": {"kind": "local", "path": "/srv/g"}}
    own = await system.client.post("/v1/projects", json=body, headers=system.auth(stranger))
    assert own.status == 202, await own.text()
    frames = []
    while not any(f.get("event", {}).get("type") == "project.created" for f in frames):
        frames.append(json.loads((await ws.receive(timeout=10)).data))
    assert all(f["event"]["tenant"] == OTHER for f in frames if f["type"] == "event"), frames
    assert acme_run not in str(frames)
    await ws.close()


async def _first(system: System, url: str, frame: dict[str, Any] | None) -> tuple[str, object]:
    """("close", code) or ("frame", type) for the first thing the socket gets after the auth frame."""
    ws = await system.client.ws_connect(url)
    try:
        if frame is not None:
            await ws.send_json(frame)
        message = await ws.receive(timeout=5)
        if message.type is WSMsgType.TEXT:
            return ("frame", json.loads(message.data)["type"])
        return ("close", message.data)
    finally:
        await ws.close()


@pytest.mark.parametrize(
    "route",
    list(UNCHECKED_IDS),
    ids=lambda route: " ".join(route),
)
async def test_naming_another_tenants_resource_in_a_body_is_404(
    system: System, route: tuple[str, str]
) -> None:
    """Naming another tenant's resource in a command's body answers 404, as in its path."""
    world = await acme_world(system)
    stranger = await system.key("admin", tenant=OTHER)
    await problem(await call(system, world, *route, _bearer(stranger)), 404, "not-found")
