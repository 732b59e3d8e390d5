"""The WebSocket relay: replay then live with no gap or duplicate, resume, tickets and close codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient, TestServer

import gateway
from gateway.context import METRICS
from schemas import subjects
from tests.gateway._runs import FakeExecutor
from tests.gateway.conftest import TENANT, System
from tests.gateway.test_commands import create_project, start_run


async def frames(ws: ClientWebSocketResponse, until: str, within: float = 10.0) -> list[dict[str, Any]]:
    """Frames until one of type `until` (included) or the close."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                break
            got.append(json.loads(message.data))
            if got[-1]["type"] == until:
                break
    return got


async def open_run_socket(system: System, run_id: str, after_seq: int = 0) -> ClientWebSocketResponse:
    ws = await system.client.ws_connect(f"/v1/runs/{run_id}/events")
    await ws.send_json({"type": "auth", "key": system.admin, "after_seq": after_seq})
    return ws


async def test_disconnect_mid_run_and_resume_sees_every_event_once_in_order(system: System) -> None:
    """Read part of a run, drop the socket, append more, resume with after_seq: the union is the whole run."""
    run = await start_run(system, await create_project(system))
    executor = FakeExecutor(system.conn, TENANT, run["id"])
    await executor.start()
    for n in range(5):
        await executor.message(n)
    ws = await open_run_socket(system, run["id"])
    first = [f for f in await frames(ws, "event") if f["type"] == "event"]
    for _ in range(2):
        first += [f for f in await frames(ws, "event") if f["type"] == "event"]
    await ws.close()
    for n in range(5, 10):
        await executor.message(n)
    await executor.succeed()
    ws = await open_run_socket(system, run["id"], after_seq=first[-1]["seq"])
    rest = await frames(ws, "end")
    ready = rest[0]
    assert ready["type"] == "ready"
    assert ready["recovered"] is True
    events = first + [f for f in rest if f["type"] == "event"]
    assert [f["seq"] for f in events] == executor.seqs
    assert all(f["event_type"] and f["event"]["type"] == f["event_type"] for f in events)
    assert rest[-1] == {"type": "end", "seq": executor.seqs[-1], "status": "succeeded"}
    closed = await ws.receive()
    assert closed.type is WSMsgType.CLOSE
    assert closed.data == 1000


async def test_live_events_arrive_after_the_replay(system: System) -> None:
    """A socket opened before the run starts gets each event as it is appended, then the end frame."""
    run = await start_run(system, await create_project(system))
    ws = await open_run_socket(system, run["id"])
    assert (await frames(ws, "ready"))[-1]["recovered"] is True
    executor = FakeExecutor(system.conn, TENANT, run["id"])
    await executor.start()
    assert (await frames(ws, "event"))[-1]["event_type"] == "run.started"
    await executor.succeed()
    assert [f["type"] for f in await frames(ws, "end")] == ["event", "end"]


async def test_live_frames_of_every_length_encoding_arrive_whole(system: System) -> None:
    """Live events whose frames need the 7-bit, 16-bit and 64-bit length forms all arrive intact, in
    order, on two sockets at once (each frame is built once and written to both)."""
    run = await start_run(system, await create_project(system))
    sockets = [await open_run_socket(system, run["id"]) for _ in range(2)]
    for ws in sockets:
        await frames(ws, "ready")
    metrics = system.client.app[METRICS]
    timed, sent = metrics.relay_lag.counts[:], metrics.frames_sent
    executor = FakeExecutor(system.conn, TENANT, run["id"])
    await executor.start()
    texts = ["", "x" * 200, "y" * 60_000, "z" * 65_536]
    for n, text in enumerate(texts):
        await executor.message(n, text)
    await executor.succeed()
    for ws in sockets:
        got = [f for f in await frames(ws, "end") if f["type"] == "event"]
        assert [f["seq"] for f in got] == executor.seqs
        assert [f["event"]["text"].get("text", "") for f in got[1:-1]] == texts
    events = len(executor.seqs)
    assert metrics.frames_sent - sent == 2 * events  # every frame, on each socket
    assert sum(metrics.relay_lag.counts) - sum(timed) == events  # the lag: once per event, not per socket


async def test_tickets_are_single_use_and_scoped(system: System) -> None:
    """A ticket opens its run's socket once; reusing it, or using it for another run, closes with 4401."""
    run = await start_run(system, await create_project(system))
    made = await system.client.post("/v1/tickets", json={"run_id": run["id"]}, headers=system.auth())
    ticket = (await made.json())["ticket"]
    ws = await system.client.ws_connect(f"/v1/runs/{run['id']}/events?ticket={ticket}")
    assert (await frames(ws, "ready"))[-1]["type"] == "ready"
    await ws.close()
    again = await system.client.ws_connect(f"/v1/runs/{run['id']}/events?ticket={ticket}")
    closed = await again.receive()
    assert closed.type is WSMsgType.CLOSE
    assert closed.data == 4401


async def test_a_record_that_is_not_an_event_is_skipped_live_and_in_replay(system: System) -> None:
    """Bytes on a run's subject that are not JSON (written past the bus) reach no client: live and
    replaying sockets get the events around them, then the end frame."""
    run = await start_run(system, await create_project(system))
    live = await open_run_socket(system, run["id"])
    await frames(live, "ready")
    executor = FakeExecutor(system.conn, TENANT, run["id"])
    await executor.start()
    subject = subjects.events(TENANT, "run", run["id"])
    garbage = await system.conn.js.publish(subject, b"\x00not json{")
    executor.at = await system.conn.log.position(subject)
    await executor.message(1)
    await executor.succeed()
    replay = await open_run_socket(system, run["id"])
    for ws in (live, replay):
        got = [f for f in await frames(ws, "end") if f["type"] in {"event", "end"}]
        assert [f["seq"] for f in got] == [*executor.seqs, executor.seqs[-1]]
        assert garbage.seq not in {f["seq"] for f in got}
        assert got[-1] == {"type": "end", "seq": executor.seqs[-1], "status": "succeeded"}


async def test_sockets_decline_per_message_compression(system: System) -> None:
    """A client asking for permessage-deflate (as browsers do) gets plain frames: each event frame is
    encoded once for every socket, and compressing it per socket would cost more than sending it."""
    run = await start_run(system, await create_project(system))
    ws = await system.client.ws_connect(f"/v1/runs/{run['id']}/events", compress=15)
    assert ws.compress == 0
    await ws.send_json({"type": "auth", "key": system.admin})
    assert (await frames(ws, "ready"))[-1]["type"] == "ready"


@contextlib.asynccontextmanager
async def replica(system: System, settings: gateway.Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(gateway.create_app(system.conn, settings))) as client:
        yield client


async def test_a_ticket_opens_one_socket_across_replicas(system: System) -> None:
    """Replicas sharing the ticket secret accept each other's tickets, and a ticket used on one is refused
    on every other; two replicas redeeming one ticket at the same moment open one socket between them."""
    shared = msgspec.structs.replace(system.settings, ticket_secret="shared-ticket-secret")
    run = await start_run(system, await create_project(system))
    path = f"/v1/runs/{run['id']}/events?ticket="
    async with replica(system, shared) as a, replica(system, shared) as b:
        made = await a.post("/v1/tickets", json={"run_id": run["id"]}, headers=system.auth())
        ticket = (await made.json())["ticket"]
        first = await b.ws_connect(path + ticket)
        assert (await frames(first, "ready"))[-1]["type"] == "ready"
        for client in (a, b):
            again = await client.ws_connect(path + ticket)
            assert (await again.receive()).data == 4401
        made = await b.post("/v1/tickets", json={"run_id": run["id"]}, headers=system.auth())
        ticket = (await made.json())["ticket"]
        sockets = await asyncio.gather(a.ws_connect(path + ticket), b.ws_connect(path + ticket))
        firsts = [await ws.receive() for ws in sockets]
        assert sorted(m.type for m in firsts) == sorted([WSMsgType.TEXT, WSMsgType.CLOSE])
        assert [m.data for m in firsts if m.type is WSMsgType.CLOSE] == [4401]


@pytest.mark.parametrize(
    ("auth", "code"),
    [({"type": "auth", "key": "key_x.nope"}, 4401), ({"hello": 1}, 4400)],
)
async def test_bad_auth_frames_close_with_their_code(system: System, auth: dict[str, Any], code: int) -> None:
    """A wrong key closes with 4401 and a malformed first frame with 4400, before any event."""
    run = await start_run(system, await create_project(system))
    ws = await system.client.ws_connect(f"/v1/runs/{run['id']}/events")
    await ws.send_json(auth)
    closed = await ws.receive()
    assert closed.type is WSMsgType.CLOSE
    assert closed.data == code


async def test_unknown_run_and_cursor_beyond_the_log_close_with_their_codes(system: System) -> None:
    """Another tenant's (or no) run closes with 4404; an after_seq past the log's end with 4409."""
    run = await start_run(system, await create_project(system))
    other = await system.key("viewer", tenant="globex")
    ws = await system.client.ws_connect(f"/v1/runs/{run['id']}/events")
    await ws.send_json({"type": "auth", "key": other})
    assert (await ws.receive()).data == 4404
    ws = await open_run_socket(system, run["id"], after_seq=10_000_000)
    assert (await ws.receive()).data == 4409
