"""Keys: who may call, what each role may do, and that a key never reaches another tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas import decode_event, subjects
from swarm import keys
from tests.gateway._problems import problem
from tests.gateway.conftest import TENANT, System


async def test_no_key_wrong_key_and_malformed_header_are_401(system: System) -> None:
    """Without a key, with a wrong secret or a bad header, every /v1 route answers 401 and no data."""
    client = system.client
    await problem(await client.get("/v1/runs"), 401, "unauthorized")
    wrong = system.admin[:-4] + ("AAAA" if not system.admin.endswith("AAAA") else "BBBB")
    await problem(await client.get("/v1/runs", headers=system.auth(wrong)), 401, "unauthorized")
    await problem(await client.get("/v1/runs", headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    await problem(await client.get("/v1/runs", headers=system.auth("key_nothing.x")), 401, "unauthorized")


async def test_revoked_and_expired_keys_are_refused(system: System) -> None:
    """A revoked key and an expired key get 401 saying so; a live key of the same tenant gets data."""
    viewer = await system.key("viewer")
    ok = await system.client.get("/v1/projects", headers=system.auth(viewer))
    assert ok.status == 200, await ok.text()
    key_id = viewer.split(".")[0]
    revoked = await system.client.post(f"/v1/keys/{key_id}/revoke", headers=system.auth())
    assert revoked.status == 200, await revoked.text()
    body = await problem(
        await system.client.get("/v1/projects", headers=system.auth(viewer)), 401, "unauthorized"
    )
    assert "revoked" in body["detail"]

    past = datetime.now(UTC) - timedelta(seconds=1)
    expired = await keys.create(system.conn, TENANT, "old", "viewer", expires_at=past)
    body = await problem(
        await system.client.get("/v1/projects", headers=system.auth(expired.token)), 401, "unauthorized"
    )
    assert "expired" in body["detail"]


async def test_roles_limit_what_a_key_may_do(system: System) -> None:
    """A viewer may read but not command, an operator may not run SQL, only an admin manages keys."""
    viewer, operator, analyst = (
        await system.key("viewer"),
        await system.key("operator"),
        await system.key("analyst"),
    )
    body = {"name": "p", "source": {"kind": "local", "path": "/tmp/p"}}
    await problem(
        await system.client.post("/v1/projects", json=body, headers=system.auth(viewer)), 403, "forbidden"
    )
    sql = {"sql": "SELECT 1 AS one"}
    await problem(
        await system.client.post("/v1/sql", json=sql, headers=system.auth(operator)), 403, "forbidden"
    )
    await problem(await system.client.get("/v1/keys", headers=system.auth(analyst)), 403, "forbidden")
    answer = await system.client.post("/v1/sql", json=sql, headers=system.auth(analyst))
    assert answer.status == 200, await answer.text()


async def test_another_tenants_key_sees_nothing_of_this_tenant(system: System) -> None:
    """A globex admin lists no acme projects, cannot read an acme project, and cannot revoke an acme key."""
    created = await system.client.post(
        "/v1/projects?wait=10",
        json={"name": "secret", "source": {"kind": "local", "path": "/tmp/s"}},
        headers=system.auth(),
    )
    assert created.status == 200, await created.text()
    project_id = (await created.json())["id"]
    seq = (await created.json())["outcome"]["seq"]  # the event's position: reads at it see the project
    other = await system.key("admin", tenant="globex")
    listed = await system.client.get(f"/v1/projects?min_seq={seq}", headers=system.auth(other))
    assert listed.status == 200
    assert (await listed.json())["items"] == []
    await problem(
        await system.client.get(f"/v1/projects/{project_id}", headers=system.auth(other)), 404, "not-found"
    )
    acme_key = system.admin.split(".")[0]
    await problem(
        await system.client.post(f"/v1/keys/{acme_key}/revoke", headers=system.auth(other)), 404, "not-found"
    )
    own = await system.client.get(f"/v1/projects/{project_id}?min_seq={seq}", headers=system.auth())
    assert (await own.json())["name"] == "secret"


async def test_keys_over_rest_are_shown_once_and_listed_without_secrets(system: System) -> None:
    """An admin creates a key (the secret comes back once), it works at once, and lists show no hash."""
    made = await system.client.post(
        "/v1/keys", json={"name": "ci", "role": "operator"}, headers=system.auth()
    )
    assert made.status == 201, await made.text()
    token = (await made.json())["key"]
    works = await system.client.get("/v1/runs", headers=system.auth(token))
    assert works.status == 200, await works.text()
    listed = await (await system.client.get("/v1/keys", headers=system.auth())).json()
    assert {item["name"] for item in listed["items"]} >= {"bootstrap", "ci"}
    assert "secret" not in str(listed)
    assert token.split(".")[1] not in str(listed)


async def test_keys_decided_in_place_agree_with_a_running_registry(system: System) -> None:
    """`swarm keys` decides its command at once while the registry (running here) takes the same command
    from the log: whichever appends first, every create and revoke succeeds, and each key's log holds one
    `key.created` and one `key.revoked`."""
    issued = [await keys.create(system.conn, TENANT, f"race {n}", "viewer") for n in range(20)]
    assert all([await keys.revoke(system.conn, TENANT, key.key_id) for key in issued])
    for key in issued:
        subject = subjects.events(TENANT, "key", key.key_id)
        kinds = [decode_event(record.data).type async for record in system.conn.log.read(subject)]
        assert kinds == ["key.created", "key.revoked"], key.key_id
