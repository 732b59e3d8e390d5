"""The WebSocket relay: one run's events (`/v1/runs/{run_id}/events`) and the tenant feed (`/v1/events`).

A socket replays the log after its `after_seq`, then goes live through its subject's hub
(`gateway.hub`), with no gap and no duplicate between them; authentication is `gateway.socket_auth`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec
import structlog
from aiohttp import web

import bus
from gateway import feed
from gateway.auth import Principal
from gateway.context import CONN, FRAMES, HUBS, METRICS, SETTINGS, STOPPING
from gateway.http import run_exists
from gateway.hub import Lagging, Sink
from gateway.metrics import Metrics
from gateway.problems import Problem
from gateway.pump import (
    BAD_REQUEST,
    GOING_AWAY,
    INTERNAL,
    NORMAL,
    NOT_FOUND,
    RESYNC,
    SLOW,
    TERMINAL,
    End,
    Frames,
    Pump,
    Ready,
    event_type,
)
from gateway.socket_auth import Closed, authenticate_socket
from schemas import subjects
from schemas.types import RunId

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()
FEED = web.RequestKey("feed", feed.Feed)  # the tenant feed's filters, on its request

_MAX_FRAME = 16 * 1_024


Start = Callable[[Principal, int], Awaitable[tuple[str, int]]]
"""Given the caller and its after_seq: the subject to follow and where to start (or `Closed`)."""


@routes.get("/v1/runs/{run_id}/events")
async def run_events(request: web.Request) -> web.StreamResponse:
    run_id = request.match_info["run_id"]

    async def start(who: Principal, after_seq: int) -> tuple[str, int]:
        if not _valid(run_id, RunId):
            raise Closed(BAD_REQUEST, "run_id is not a run id")
        if not await run_exists(request.app[CONN], who.tenant, run_id):
            raise Closed(NOT_FOUND, "no such run")
        return subjects.events(who.tenant, "run", run_id), after_seq

    return await _serve(request, run_id, start, run_id=run_id)


@routes.get("/v1/events")
async def tenant_events(request: web.Request) -> web.StreamResponse:
    """Every event of the caller's tenant, live (or from `after_seq`), filtered by project and type."""
    filters = feed.Filters.of(request.query)

    async def start(who: Principal, after_seq: int) -> tuple[str, int]:
        after = after_seq if "after_seq" in request.query or after_seq else await request.app[CONN].log.end()
        request[FEED] = feed.Feed(request.app[CONN], who.tenant, filters)
        return subjects.tenant_log(who.tenant), after

    return await _serve(request, "feed", start)


async def _serve(
    request: web.Request, scope: str, start: Start, run_id: str | None = None
) -> web.StreamResponse:
    app = request.app
    after_seq = _after_seq(request)
    # No permessage-deflate: each frame is encoded once for all its sockets, and compressing it again per
    # socket (about 4 µs for an event frame) would cost more than the frame itself.
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=_MAX_FRAME, compress=False)
    await ws.prepare(request)
    app[METRICS].sockets_open += 1
    try:
        who, after_seq = await authenticate_socket(request, ws, scope, after_seq)
        subject, after_seq = await start(who, after_seq)
        await _relay(request, ws, subject, after_seq, run_id)
    except Closed as exc:
        await ws.close(code=exc.code, message=exc.reason.encode()[:120])
    finally:
        app[METRICS].sockets_open -= 1
    return ws


def _after_seq(request: web.Request) -> int:
    raw = request.query.get("after_seq", "0")
    if not raw.isdigit() or len(raw) > 19:
        raise Problem("invalid-request", "after_seq must be a non-negative integer")
    return int(raw)


async def _relay(
    request: web.Request, ws: web.WebSocketResponse, subject: str, after_seq: int, run_id: str | None
) -> None:
    app = request.app
    conn, settings = app[CONN], app[SETTINGS]
    head, first = await conn.log.end(), await conn.log.first()
    if after_seq > head:
        raise Closed(RESYNC, f"after_seq {after_seq} is beyond the log (at {head})")
    recovered = after_seq == 0 or after_seq + 1 >= first
    every, transport = settings.ws_position_every, request.transport
    pump = Pump(ws, app[METRICS], queue=settings.ws_queue, every=every, transport=transport)
    pump.considered = after_seq
    pump.offer(Ready(after_seq=after_seq, head=head, recovered=recovered, run_id=run_id))
    if run_id is not None and (ended := await _ended_by(conn, subject, after_seq)) is not None:
        pump.offer(ended)  # the client saw the terminal event but not the end frame: it gets it now
    tasks = {
        asyncio.ensure_future(_produce(request, pump, subject, after_seq)),
        asyncio.ensure_future(pump.write()),
        asyncio.ensure_future(pump.tick()),
        asyncio.ensure_future(pump.overflowed.wait()),
        asyncio.ensure_future(app[STOPPING].wait()),
        asyncio.ensure_future(_drain_incoming(ws)),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    failed = _failure(done)
    if failed is not None:
        log.error("relay_failed", subject=subject, sent=pump.sent, exc_info=failed)
        raise Closed(INTERNAL, f"relay failed; resume with after_seq={pump.sent}")
    await _close(ws, pump, app[STOPPING].is_set(), app[METRICS])


def _failure(done: Iterable[asyncio.Future[Any]]) -> BaseException | None:
    """The first unexpected error among the relay's finished tasks (the client leaving is not one)."""
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            return error
    return None


async def _ended_by(conn: bus.Connection, subject: str, after_seq: int) -> End | None:
    """The end frame, when the run's terminal event is at or before `after_seq`."""
    last = await conn.log.last(subject)
    if last is None or last.seq > after_seq:
        return None
    kind = event_type(last.data)
    return End(seq=last.seq, status=kind.removeprefix("run.")) if kind in TERMINAL else None


async def _close(ws: web.WebSocketResponse, pump: Pump, stopping: bool, metrics: Metrics) -> None:
    if pump.finished.is_set():
        await ws.close(code=NORMAL, message=b"run finished")
    elif pump.overflowed.is_set():
        metrics.sockets_cut_slow += 1
        await ws.close(code=SLOW, message=f"too slow; resume with after_seq={pump.sent}".encode())
    elif stopping:
        await ws.close(
            code=GOING_AWAY, message=f"server going away; resume with after_seq={pump.sent}".encode()
        )
    elif not ws.closed:
        await ws.close()


async def _produce(request: web.Request, pump: Pump, subject: str, after_seq: int) -> None:
    chosen: feed.Feed | None = request.get(FEED)
    hubs, frames = request.app[HUBS], request.app[FRAMES]
    try:
        if chosen is None:  # a run's socket: the hub hands it each record itself
            await hubs.feed(subject, after_seq, _sink(frames, pump))
        else:  # the tenant feed filters with queries of its own, so it reads on its own task
            async with contextlib.aclosing(hubs.follow(subject, after_seq)) as records:
                await _forward(records, frames, pump, chosen)
    except Lagging:
        pump.overflowed.set()  # closed as too slow, with the position to resume from
        return
    if pump.ending:
        await pump.finished.wait()


def _sink(frames: Frames, pump: Pump) -> Sink:
    """Send each batch of a run's records as frames on the socket; False once the client is too far
    behind or the run ended."""

    def take(records: Sequence[bus.Record]) -> bool:
        events, end = frames.events(records)
        if end is not None:
            events = events[: events.index(end) + 1]
        if events and not pump.offer_events(events):
            return False
        if end is not None:
            pump.skip(end.seq)
            pump.end(End(seq=end.seq, status=end.event_type.removeprefix("run.")))
            return False
        pump.skip(records[-1].seq)
        return True

    return take


async def _forward(records: AsyncIterator[bus.Record], frames: Frames, pump: Pump, chosen: feed.Feed) -> None:
    """Send the tenant feed's wanted records as frames; it never ends by itself."""
    async for record in records:
        frame = frames.of(record)
        if frame is not None and await chosen.wanted(record, frame.event_type) and not pump.offer(frame):
            return
        pump.skip(record.seq)


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) client frames, so pings are answered and a client's close is seen."""
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


def _valid(value: str, kind: object) -> bool:
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError:
        return False
    return True
