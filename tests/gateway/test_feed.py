"""The tenant feed, position frames, and project update and archive over REST."""

from __future__ import annotations

import asyncio

import pytest

import gateway
from gateway.context import HUBS
from tests.gateway._problems import problem
from tests.gateway._runs import FakeExecutor
from tests.gateway.conftest import TENANT, System
from tests.gateway.test_commands import create_project, start_run
from tests.gateway.test_relay import frames


@pytest.fixture
def gateway_settings() -> gateway.Settings:
    return gateway.Settings(port=0, ws_position_every=0.2)


async def test_the_tenant_feed_streams_live_events_filtered_by_type(system: System) -> None:
    """The feed authenticated by first frame delivers new events of the tenant, only of the asked types."""
    project_id = await create_project(system)
    ws = await system.client.ws_connect("/v1/events?types=run.")
    await ws.send_json({"type": "auth", "key": system.admin})
    assert (await frames(ws, "ready"))[-1]["type"] == "ready"
    run = await start_run(system, project_id)
    executor = FakeExecutor(system.conn, TENANT, run["id"])
    await executor.start()
    await executor.succeed()
    seen = [f for f in await frames(ws, "event") + await frames(ws, "event") if f["type"] == "event"]
    assert [f["event_type"] for f in seen] == ["run.started", "run.succeeded"]
    assert all(f["event"]["run_id"] == run["id"] for f in seen)
    await ws.close()


async def test_quiet_sockets_get_position_frames(system: System) -> None:
    """With nothing to send, a socket still gets position frames naming the log's head to resume from."""
    run = await start_run(system, await create_project(system))
    ws = await system.client.ws_connect(f"/v1/runs/{run['id']}/events")
    await ws.send_json({"type": "auth", "key": system.admin})
    got = await frames(ws, "position", within=5.0)
    assert got[0]["type"] == "ready"
    assert got[-1]["type"] == "position"
    assert got[-1]["seq"] >= got[0]["after_seq"]
    await ws.close()


async def test_project_update_and_archive(system: System) -> None:
    """PATCH changes a project (waiting for its event); archive ends it; reads show both."""
    project_id = await create_project(system)
    auth = system.auth()
    updated = await system.client.patch(
        f"/v1/projects/{project_id}?wait=10", json={"description": "the demo"}, headers=auth
    )
    assert updated.status == 200, await updated.text()
    seq = (await updated.json())["outcome"]["seq"]
    shown = await system.client.get(f"/v1/projects/{project_id}?min_seq={seq}", headers=auth)
    assert (await shown.json())["description"] == "the demo"
    archived = await system.client.post(f"/v1/projects/{project_id}/archive?wait=10", json={}, headers=auth)
    seq = (await archived.json())["outcome"]["seq"]
    shown = await system.client.get(f"/v1/projects/{project_id}?min_seq={seq}", headers=auth)
    assert (await shown.json())["status"] == "archived"
    again = await system.client.post(f"/v1/projects/{project_id}/archive", json={}, headers=auth)
    await problem(again, 409, "conflict")
    missing = await system.client.patch("/v1/projects/prj_01JD0000000000000000000009", json={}, headers=auth)
    await problem(missing, 404, "not-found")


async def test_sockets_on_one_run_share_one_subscription(system: System) -> None:
    """Five watchers of one run use one log subscription; each still gets every event once, in order."""
    run = await start_run(system, await create_project(system))
    hubs = system.client.server.app[HUBS]
    sockets = []
    for _ in range(5):
        ws = await system.client.ws_connect(f"/v1/runs/{run['id']}/events")
        await ws.send_json({"type": "auth", "key": system.admin})
        await frames(ws, "ready")
        sockets.append(ws)
    assert hubs.subjects == 1
    executor = FakeExecutor(system.conn, TENANT, run["id"])
    await executor.start()
    for n in range(20):
        await executor.message(n)
    await executor.succeed()
    for ws in sockets:
        got = [f for f in await frames(ws, "end") if f["type"] == "event"]
        assert [f["seq"] for f in got] == executor.seqs
        await ws.close()
    async with asyncio.timeout(5):
        while hubs.subjects:  # noqa: ASYNC110  # the server side of each socket ends on its own time
            await asyncio.sleep(0.05)
