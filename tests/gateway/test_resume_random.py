"""Resuming a run's socket with `after_seq`: random disconnects while events are appended lose and repeat
nothing, and a socket open when the gateway shuts down is told where to resume (close 1001).

Only the documented protocol is used (README, "WebSocket protocol"): the auth frame, the ready, event,
position and end frames, and the close codes with their reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient, TestServer

import gateway
from tests.gateway._runs import FakeExecutor
from tests.gateway.conftest import TENANT, System
from tests.gateway.test_commands import create_project, start_run

EVENTS = 200  # per run: run.started, the messages, run.succeeded
ROUNDS = 20
SEED = 20261126
TERMINAL = {"run.succeeded", "run.failed", "run.cancelled", "run.timed_out"}
_RESUME = re.compile(r"resume with after_seq=(\d+)")


@dataclass
class Watcher:
    """What one client has received over all its connections to one run."""

    run_id: str
    after: int = 0  # where the next connection resumes from
    events: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    connections: int = 0

    @property
    def terminal(self) -> bool:
        return bool(self.events) and self.events[-1]["event_type"] in TERMINAL

    def take(self, frame: dict[str, Any]) -> None:
        """Note a frame; an event must come after everything received before it."""
        if frame["type"] == "event":
            assert frame["seq"] > self.after, f"event {frame['seq']} again or out of order (at {self.after})"
            self.events.append(frame)
            self.after = frame["seq"]
        elif frame["type"] == "position":
            self.after = max(self.after, frame["seq"])
        elif frame["type"] == "end":
            self.end = frame


async def connect(client: TestClient[Any, Any], key: str, watcher: Watcher) -> ClientWebSocketResponse:
    ws = await client.ws_connect(f"/v1/runs/{watcher.run_id}/events")
    await ws.send_json({"type": "auth", "key": key, "after_seq": watcher.after})
    watcher.connections += 1
    return ws


async def read(ws: ClientWebSocketResponse, watcher: Watcher, frames: int) -> int | None:
    """Take up to `frames` frames; the close code if the server closed first."""
    for _ in range(frames):
        try:
            message = await ws.receive(timeout=10)
        except TimeoutError:
            raise AssertionError(
                f"no frame for 10 s on connection {watcher.connections}, resumed at {watcher.after}, "
                f"{len(watcher.events)} events so far"
            ) from None
        if message.type is not WSMsgType.TEXT:
            return int(message.data)
        frame = json.loads(message.data)
        if frame["type"] == "ready":
            assert frame["after_seq"] == watcher.after
            assert frame["recovered"] is True
        watcher.take(frame)
    return None


async def follow_with_drops(
    client: TestClient[Any, Any], key: str, watcher: Watcher, rng: random.Random
) -> None:
    """Connect, read a random number of frames (sometimes none), drop the socket; until the run ends.

    Once the run's terminal event is in, the client reads on to the end frame rather than dropping: a
    resume past the terminal event is `test_a_resume_after_the_terminal_event_gets_the_end_frame`.
    """
    while True:
        ws = await connect(client, key, watcher)
        closed = await read(ws, watcher, rng.choice([0, 1, 2, rng.randint(3, 40)]))
        if closed is None and watcher.terminal:
            closed = await read(ws, watcher, 2)
        if closed is not None:
            assert closed == 1000, f"closed with {closed} before the end"
            return
        await ws.close()


async def produce(executor: FakeExecutor, n: int) -> None:
    await executor.start()
    for i in range(n - 2):
        await executor.message(i)
    await executor.succeed()


@contextlib.asynccontextmanager
async def replica(system: System) -> AsyncIterator[TestClient[Any, Any]]:
    """Another gateway on the same log, whose shutdown waits at most 2 s for handlers still running."""
    app = gateway.create_app(system.conn, system.settings)
    server = TestServer(app)
    await server.start_server(shutdown_timeout=2.0)  # a handler left running would hold it 60 s
    async with TestClient(server) as client:
        yield client


async def watch_rounds(system: System, client: TestClient[Any, Any]) -> None:
    """ROUNDS runs of EVENTS events, each followed through sockets dropped at seeded random points."""
    rng = random.Random(SEED)
    project_id = await create_project(system)
    for round_ in range(ROUNDS):
        run = await start_run(system, project_id)
        executor = FakeExecutor(system.conn, TENANT, run["id"])
        watcher = Watcher(run_id=run["id"])
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(produce(executor, EVENTS))
            tasks.create_task(follow_with_drops(client, system.admin, watcher, rng))
        where = f"round {round_} (seed {SEED}, {watcher.connections} connections)"
        assert [f["seq"] for f in watcher.events] == executor.seqs, where
        assert watcher.events[-1]["event_type"] == "run.succeeded", where
        assert watcher.end == {"type": "end", "seq": executor.seqs[-1], "status": "succeeded"}, where
        assert watcher.connections > 1, where


async def test_random_disconnects_and_resumes_see_every_event_once_in_order(system: System) -> None:
    """Twenty runs of 200 events, each watched through sockets dropped at seeded random points: every event
    arrives exactly once, in log order, and each run's last frame is its end frame."""
    async with replica(system) as client:
        await watch_rounds(system, client)


async def test_sockets_the_clients_dropped_are_released(system: System) -> None:
    """After the random rounds, with every client gone, the gateway counts no open socket."""
    async with replica(system) as client:
        await watch_rounds(system, client)
        await no_socket_left_open(client)


async def no_socket_left_open(client: TestClient[Any, Any], within: float = 5.0) -> None:
    """The gateway's open-sockets gauge (GET /metrics) comes back to 0 once every client has gone."""
    gauge = ""
    try:
        async with asyncio.timeout(within):
            while gauge != "0":
                text = await (await client.get("/metrics")).text()
                gauge = re.search(r"^swarm_gateway_websockets_open (\S+)$", text, re.MULTILINE)[1]  # type: ignore[index]
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{gauge} sockets still open {within} s after every client closed") from None


async def test_a_socket_open_at_shutdown_closes_1001_and_resumes_on_another_replica(system: System) -> None:
    """Shutting the gateway down closes an open socket with 1001 and `resume with after_seq=N`, N the last
    event it sent; a socket to a fresh replica from N gets the rest of the run, nothing twice."""
    run = await start_run(system, await create_project(system))
    executor = FakeExecutor(system.conn, TENANT, run["id"])
    await executor.start()
    for i in range(5):
        await executor.message(i)
    watcher = Watcher(run_id=run["id"])
    ws = await connect(system.client, system.admin, watcher)
    assert await read(ws, watcher, 1 + 6) is None  # ready and the six events so far
    closing = asyncio.create_task(system.client.server.close())
    async with asyncio.timeout(10):
        message = await ws.receive()
    await closing
    assert message.type is WSMsgType.CLOSE, message
    assert message.data == 1001, message
    resume = _RESUME.search(message.extra or "")
    assert resume is not None, f"the close reason says where to resume: {message.extra!r}"
    assert int(resume.group(1)) == watcher.after == executor.seqs[-1]

    for i in range(5, 10):
        await executor.message(i)
    await executor.succeed()
    replica = gateway.create_app(system.conn, system.settings)
    async with TestClient(TestServer(replica)) as client:
        ws = await connect(client, system.admin, watcher)
        assert await read(ws, watcher, 100) == 1000
    assert [f["seq"] for f in watcher.events] == executor.seqs
    assert watcher.end == {"type": "end", "seq": executor.seqs[-1], "status": "succeeded"}


async def test_a_resume_after_the_terminal_event_gets_the_end_frame(system: System) -> None:
    """A socket resumed at the run's terminal event (the end frame was missed) gets the end frame and 1000."""
    run = await start_run(system, await create_project(system))
    executor = FakeExecutor(system.conn, TENANT, run["id"])
    await executor.start()
    last = await executor.succeed()
    watcher = Watcher(run_id=run["id"], after=last)
    ws = await connect(system.client, system.admin, watcher)
    assert await read(ws, watcher, 3) == 1000  # ready, end, close
    assert watcher.end == {"type": "end", "seq": last, "status": "succeeded"}
