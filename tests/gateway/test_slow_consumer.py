"""A slow WebSocket client is cut with a resumable close code, and the gateway's memory stays bounded."""

from __future__ import annotations

import asyncio
import gc
import socket
import tracemalloc
import weakref
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import WSMsgType, web

import bus
import gateway
from gateway.context import METRICS
from gateway.metrics import Histogram, Metrics
from gateway.pump import Frames, Pump
from schemas import AgentMessage, Body, IdSource, Kind
from tests.gateway._runs import FakeExecutor
from tests.gateway.conftest import TENANT, System
from tests.gateway.test_commands import create_project, start_run

ids = IdSource()
QUEUE = 8


@pytest.fixture
def gateway_settings() -> gateway.Settings:
    return gateway.Settings(port=0, ws_queue=QUEUE)


async def test_a_slow_consumer_is_cut_with_a_resumable_code(system: System) -> None:
    """A client that reads nothing while a run floods 12 MB is closed with 4429 and its resume point,
    and once it is cut the gateway holds none of what was flooded."""
    run = await start_run(system, await create_project(system))
    executor = FakeExecutor(system.conn, TENANT, run["id"])
    await executor.start()
    # A receive buffer of its own size: the kernel would otherwise grow it (up to tcp_rmem's maximum,
    # 32 MB here) and take the whole flood on the client's behalf.
    connector = aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as session:
        ws = await session.ws_connect(system.client.make_url(f"/v1/runs/{run['id']}/events"), max_msg_size=0)
        await ws.send_json({"type": "auth", "key": system.admin})
        tracemalloc.start(40)
        await _flood(system, executor, run["id"])
        closed: Any = None
        async with asyncio.timeout(30):
            while closed is None:
                message = await ws.receive()
                if message.type in {WSMsgType.CLOSE, WSMsgType.CLOSED}:
                    closed = message
    assert closed.data == 4429
    assert "after_seq=" in (closed.extra or "")
    metrics = system.client.app[METRICS]  # type: ignore[index]
    async with asyncio.timeout(10):
        while metrics.sockets_open:  # noqa: ASYNC110  # the server side finishes its close
            await asyncio.sleep(0.01)
    gc.collect()
    # What is still allocated with the gateway on the stack (this process also runs the projector).
    held = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*/gateway/*", all_frames=True)]
    )
    tracemalloc.stop()
    assert metrics.sockets_cut_slow == 1
    assert sum(stat.size for stat in held.statistics("filename")) < 1_000_000  # of the 12 MB flooded


async def _flood(system: System, executor: FakeExecutor, run_id: str) -> None:
    """200 events of 60 KB each, appended as fast as the log takes them."""
    big = "x" * 60_000
    for n in range(200):
        event = AgentMessage(
            id=ids.new(Kind.EVENT),
            at=datetime.now(UTC),
            tenant=TENANT,
            actor="exe_test",
            run_id=run_id,
            item_id=f"b{n}",
            text=Body(text=big),
        )
        executor.at = await system.conn.log.append(event, executor.at)


def _small_receive_buffer(address: Any) -> socket.socket:
    family, kind, proto, _, _ = address
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1_024)
    return sock


def test_the_frame_cache_is_bounded_in_bytes() -> None:
    """Large events do not pile up in the shared frame cache: it keeps at most its byte budget (and the
    newest frame), while a record asked for again right away is encoded once."""
    frames = Frames(Histogram(), max_bytes=256 * 1_024)
    for seq in range(1, 201):
        data = msgspec.json.encode({"type": "run.agent_message", "text": "x" * 60_000})
        first = frames.of(bus.Record(seq=seq, subject="s", data=data))
        assert frames.of(bus.Record(seq=seq, subject="s", data=data)) is first
    assert frames.held <= 256 * 1_024
    assert frames.of(bus.Record(seq=200, subject="s", data=b"")) is first  # the newest is still there


async def test_a_batch_s_frames_are_built_once_and_forgotten_after_the_turn() -> None:
    """Every socket given the same batch in one turn gets the same frames (built once, the run's end
    found), and the batch is not kept past that turn, however large its events."""
    lag = Histogram()
    frames = Frames(lag, max_bytes=64 * 1_024)
    data = [msgspec.json.encode({"type": kind, "text": "x" * 60_000}) for kind in ("run.agent_message",) * 3]
    batch = _Batch(
        bus.Record(seq=seq, subject="s", data=body, time=datetime.now(UTC))
        for seq, body in enumerate(data, 1)
    )
    batch.append(bus.Record(seq=4, subject="s", data=b'{"type":"run.succeeded"}', time=datetime.now(UTC)))
    events, end = frames.events(batch)
    assert frames.events(batch)[0] is events
    assert [frame.seq for frame in events] == [1, 2, 3, 4]
    assert end is events[3]
    assert sum(lag.counts) == 4  # the relay lag, once per event
    kept = weakref.ref(batch)
    del batch, events, end
    assert kept() is not None  # still the batch of this turn
    await asyncio.sleep(0)
    assert kept() is None
    assert frames.held <= 64 * 1_024 + 100


class _Batch(list[bus.Record]):
    """A batch that can be weakly referenced."""


async def test_a_batch_goes_straight_out_only_up_to_the_high_water_mark() -> None:
    """A batch of frames (a replay, or a gateway catching up) is written in one go only up to the
    connection's high-water mark; the rest queues for the socket's writer, so 6 MB of events to a
    client that reads nothing never lands in the gateway's memory at once."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            accepted.set_result(transport)

    server = await loop.create_server(Accept, "127.0.0.1", 0)
    client = _small_receive_buffer(socket.getaddrinfo("127.0.0.1", 0, type=socket.SOCK_STREAM)[0])
    client.connect(server.sockets[0].getsockname())  # and never reads
    try:
        transport = await accepted
        transport.set_write_buffer_limits(high=256 * 1_024)
        metrics = Metrics()
        pump = Pump(
            web.WebSocketResponse(compress=False), metrics, queue=1_000, every=60, transport=transport
        )
        frames = Frames(Histogram(), max_bytes=64 * 1_024)
        body = msgspec.json.encode({"type": "run.agent_message", "text": "x" * 60_000})
        events, _ = frames.events([bus.Record(seq=seq, subject="s", data=body) for seq in range(1, 101)])
        assert pump.offer_events(events)
        assert 1 <= pump.sent < 100
        assert metrics.frames_sent == pump.sent  # written in order, the rest queued behind them
        assert transport.get_write_buffer_size() < 256 * 1_024 + 2 * len(events[0].wire)
        assert pump.offer_events(events[:1])  # a later frame queues too, behind the others
        assert pump.sent == metrics.frames_sent
    finally:
        client.close()
        server.close()
        await server.wait_closed()
