"""Commands over REST: idempotency, ?wait for the outcome, read-your-writes, artifacts and files."""

from __future__ import annotations

from typing import Any

from schemas import decode_command
from tests.gateway._problems import problem
from tests.gateway._runs import FakeExecutor, workspace_archive
from tests.gateway.conftest import TENANT, System

PROJECT = {"name": "demo", "source": {"kind": "local", "path": "/srv/demo"}}


async def create_project(system: System) -> str:
    made = await system.client.post("/v1/projects?wait=10", json=PROJECT, headers=system.auth())
    assert made.status == 200, await made.text()
    project_id: str = (await made.json())["id"]
    return project_id


async def start_run(system: System, project_id: str, **headers: str) -> dict[str, Any]:
    body = {"project_id": project_id, "instructions": "say hello", "limits": {"max_tokens": 1000}}
    started = await system.client.post("/v1/runs", json=body, headers=system.auth() | headers)
    assert started.status == 202, await started.text()
    assert started.headers["Location"] == f"/v1/runs/{(await started.json())['id']}"
    answer: dict[str, Any] = await started.json()
    return answer


async def test_the_same_idempotency_key_twice_gives_one_command_and_the_same_answer(system: System) -> None:
    """Two starts with one Idempotency-Key: one run.start in the log, both answers name the same run."""
    project_id = await create_project(system)
    first = await start_run(system, project_id, **{"Idempotency-Key": "start-1"})
    again = await start_run(system, project_id, **{"Idempotency-Key": "start-1"})
    assert again["id"] == first["id"]
    assert again["seq"] == first["seq"]
    assert again["command_id"] == first["command_id"]
    assert again["duplicate"] is True
    assert first["duplicate"] is False
    starts = [decode_command(r.data) async for r in system.conn.log.read(f"swarm.{TENANT}.cmd.run.*.start")]
    assert [c.run_id for c in starts] == [first["id"]]  # type: ignore[union-attr]
    other = await start_run(system, project_id, **{"Idempotency-Key": "start-2"})
    assert other["id"] != first["id"]


async def test_a_key_reused_for_another_kind_of_request_is_a_conflict(system: System) -> None:
    """An Idempotency-Key first used to create a project cannot start a run: 409, nothing started."""
    made = await system.client.post(
        "/v1/projects", json=PROJECT, headers=system.auth() | {"Idempotency-Key": "k"}
    )
    project_id = (await made.json())["id"]
    body = {"project_id": project_id, "instructions": "x"}
    await problem(
        await system.client.post("/v1/runs", json=body, headers=system.auth() | {"Idempotency-Key": "k"}),
        409,
        "idempotency-key-reused",
    )


async def test_idempotency_keys_of_two_tenants_never_collide(system: System) -> None:
    """The same Idempotency-Key in two tenants creates two projects, each in its own tenant."""
    other = await system.key("operator", tenant="globex")
    headers = {"Idempotency-Key": "same"}
    a = await (await system.client.post("/v1/projects", json=PROJECT, headers=system.auth() | headers)).json()
    b = await (
        await system.client.post("/v1/projects", json=PROJECT, headers=system.auth(other) | headers)
    ).json()
    assert a["id"] != b["id"]
    assert not b["duplicate"]


async def test_wait_returns_the_outcome_and_min_seq_reads_your_writes(system: System) -> None:
    """?wait gives 200 with the run's terminal event once it comes; reads at min_seq see it."""
    project_id = await create_project(system)
    run = await start_run(system, project_id)
    executor = FakeExecutor(system.conn, TENANT, run["id"])
    await executor.start()
    last = await executor.succeed()
    body = {"project_id": project_id, "instructions": "x"}
    waited = await system.client.post(f"/v1/runs/{run['id']}/cancel?wait=5", json={}, headers=system.auth())
    assert waited.status == 200, await waited.text()
    outcome = (await waited.json())["outcome"]
    assert outcome["type"] == "run.succeeded"
    assert outcome["seq"] == last
    read = await system.client.get(f"/v1/runs/{run['id']}?min_seq={last}", headers=system.auth())
    assert read.status == 200
    assert (await read.json())["status"] == "succeeded"
    assert int(read.headers["X-Applied-Seq"]) >= last
    assert body  # the start body shape above is what clients send


async def test_diff_artifacts_and_workspace_files_download(system: System) -> None:
    """The diff, an artifact by name, the file list and one file come back from the blob store."""
    project_id = await create_project(system)
    run = await start_run(system, project_id)
    executor = FakeExecutor(system.conn, TENANT, run["id"])
    await executor.start()
    await executor.artifact("diff.patch", "diff", b"--- a\n+++ b\n", "text/x-diff")
    archive = workspace_archive({"src/main.py": b"print('hi')\n", ".gitignore": b"*.pyc\n"})
    last = await executor.artifact("workspace.tar.gz", "other", archive, "application/gzip")
    auth = system.auth()
    diff = await system.client.get(f"/v1/runs/{run['id']}/diff?min_seq={last}", headers=auth)
    assert diff.status == 200
    assert await diff.read() == b"--- a\n+++ b\n"
    listed = await (await system.client.get(f"/v1/runs/{run['id']}/files", headers=auth)).json()
    assert listed["items"] == [{"path": ".gitignore", "size": 6}, {"path": "src/main.py", "size": 12}]
    one = await system.client.get(f"/v1/runs/{run['id']}/files/src/main.py", headers=auth)
    assert await one.read() == b"print('hi')\n"
    named = await system.client.get(f"/v1/runs/{run['id']}/artifacts/diff.patch", headers=auth)
    assert named.status == 200
    assert "attachment" in named.headers["Content-Disposition"]
    await problem(
        await system.client.get(f"/v1/runs/{run['id']}/files/nothing.txt", headers=auth), 404, "not-found"
    )


async def test_path_traversal_in_file_download_is_refused(system: System) -> None:
    """`..`, absolute and encoded escapes are refused with 400 (or never reach a file) and leak nothing."""
    project_id = await create_project(system)
    run = await start_run(system, project_id)
    base = f"/v1/runs/{run['id']}/files/"
    for attempt in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "src/..%2F..%2Fsecret", "a/%2E%2E/b"):
        response = await system.client.get(base + attempt, headers=system.auth())
        assert response.status in {400, 404}, attempt
        body = await problem(
            response, response.status, "invalid-request" if response.status == 400 else "not-found"
        )
        assert "root:" not in str(body)
