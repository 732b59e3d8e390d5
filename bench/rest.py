"""REST: command-accept latency and requests/s through the real gateway against raw aiohttp, in one run.

One embedded nats-server; the gateway (`python -m swarm.cli gateway`) and a projector replica
(`python -m swarm.cli projector`) in child processes, the raw baseline (aiohttp with one trivial JSON
handler per route, no middleware) in a third; the load comes from this process. For 1 and 16
concurrent clients (one keep-alive connection each), each side is measured on its own for a fixed
time, in an order that alternates:

- **POST /v1/runs** with a fresh `Idempotency-Key` and an admin key from `swarm.keys.bootstrap`: the
  gateway authenticates, rate-limits, validates the body and sends `StartRun` to the log (202 once
  JetStream has acknowledged it). The raw side decodes the same JSON body and answers 202 with the same
  shape, touching nothing.
- **GET /v1/runs/{id}** of the runs the POST phase started: the gateway asks the projector over NATS
  and passes its answer through; the raw side answers a fixed JSON object.

Latency is the client's wall time per request, body read included; p50 / p99 over every request of the
phase; requests/s is the phase's requests over its length. The ratio is gateway / raw requests/s.

    .venv/bin/python bench/rest.py [--seconds 4] [--clients 1,16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

import bus
from schemas import IdSource, Kind
from swarm import keys

TENANT = "bench"
RUN = {"id": "run_01JD0000000000000000000001", "command_id": "cmd_x", "seq": 1, "status": "accepted"}

# Children: the raw baseline, the gateway and the projector.


def raw_app() -> web.Application:
    """The baseline: the same routes, the same JSON in and out, nothing behind them."""

    async def start(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({**RUN, "duplicate": False}, status=202, headers={"Location": "/v1/runs/x"})

    async def get(request: web.Request) -> web.Response:
        return web.json_response({"run_id": request.match_info["run_id"], "status": "queued"})

    app = web.Application()
    app.router.add_post("/v1/runs", start)
    app.router.add_get("/v1/runs/{run_id}", get)
    return app


async def serve_raw() -> None:
    runner = web.AppRunner(raw_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"raw on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def child(argv: list[str], env: dict[str, str], log: Path, ready: str | None) -> AsyncIterator[str]:
    """A child process; with `ready`, the rest of its first stdout line starting with it (its URL)."""
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *argv, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=sink
        )
    try:
        line = ""
        if ready is not None:
            assert process.stdout is not None
            async with asyncio.timeout(30):
                line = (await process.stdout.readline()).decode()
            if not line.startswith(ready):
                raise SystemExit(f"{argv} did not start: {line!r} (see {log.read_text()[-2000:]})")
        yield line.removeprefix(ready or "").strip()
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()


# The load.


@dataclass(frozen=True, slots=True)
class Phase:
    side: str
    op: str
    clients: int
    latencies_ms: list[float]
    seconds: float
    failures: int

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


Request = Callable[[aiohttp.ClientSession, int], Awaitable[bool]]


async def load(base: str, request: Request, clients: int, seconds: float) -> tuple[list[float], int, float]:
    """`clients` loops of `request` for `seconds`: latencies (ms), failures, the phase's length."""
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, connector=connector) as session:
        await request(session, -1)  # the connection pool and the handlers warm up outside the timing
        started = time.perf_counter()
        deadline = started + seconds

        async def client(number: int) -> None:
            nonlocal failures
            i = number
            while (now := time.perf_counter()) < deadline:
                ok = await request(session, i)
                latencies.append((time.perf_counter() - now) * 1000)
                failures += not ok
                i += clients

        async with asyncio.TaskGroup() as tasks:
            for number in range(clients):
                tasks.create_task(client(number))
        return latencies, failures, time.perf_counter() - started


@dataclass
class Target:
    side: str
    base: str
    headers: dict[str, str]
    project_id: str
    started: list[str]  # run ids the POST phases started, for the GET phases

    async def post(self, session: aiohttp.ClientSession, _: int) -> bool:
        body = {"project_id": self.project_id, "instructions": "bench: say hello"}
        headers = self.headers | {"Idempotency-Key": uuid.uuid4().hex}
        async with session.post("/v1/runs", json=body, headers=headers) as answer:
            data = await answer.json()
            self.started.append(data["id"])
            return answer.status == 202

    async def get(self, session: aiohttp.ClientSession, i: int) -> bool:
        run_id = self.started[i % len(self.started)]
        async with session.get(f"/v1/runs/{run_id}", headers=self.headers) as answer:
            await answer.read()
            return answer.status == 200


async def phase(target: Target, op: str, clients: int, seconds: float) -> Phase:
    request = target.post if op == "POST" else target.get
    latencies, failures, length = await load(target.base, request, clients, seconds)
    return Phase(target.side, op, clients, latencies, length, failures)


async def caught_up(target: Target, conn: bus.Connection) -> None:
    """The projector has every run the POST phases started (read at the log's end once)."""
    head = await conn.log.end()
    async with aiohttp.ClientSession(target.base) as session:
        url = f"/v1/runs/{target.started[-1]}?min_seq={head}"
        async with session.get(url, headers=target.headers) as answer:
            if answer.status != 200:
                raise SystemExit(f"the projector did not catch up: {answer.status} {await answer.text()}")


async def measure(
    gateway: Target, raw: Target, conn: bus.Connection, args: argparse.Namespace
) -> list[Phase]:
    phases: list[Phase] = []
    turn = 0
    for op in ("POST", "GET"):
        if op == "GET":
            await caught_up(gateway, conn)
        for clients in args.clients:
            pair = [gateway, raw] if turn % 2 == 0 else [raw, gateway]
            turn += 1
            phases += [await phase(target, op, clients, args.seconds) for target in pair]
    return phases


def report(phases: list[Phase]) -> None:
    print()
    print("| route | clients | gateway p50 / p99 ms | gateway req/s | raw p50 / p99 ms | raw req/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    by_key = {(p.side, p.op, p.clients): p for p in phases}
    for op, route in (("POST", "POST /v1/runs"), ("GET", "GET /v1/runs/{id}")):
        for clients in sorted({p.clients for p in phases}):
            gw, raw = by_key[("gateway", op, clients)], by_key[("raw", op, clients)]
            print(
                f"| {route} | {clients} | {gw.quantile(0.5):.2f} / {gw.quantile(0.99):.2f} | {gw.rate:,.0f} "
                f"| {raw.quantile(0.5):.2f} / {raw.quantile(0.99):.2f} | {raw.rate:,.0f} "
                f"| {gw.rate / raw.rate:.2f} |"
            )
    failures = {f"{p.side} {p.op} x{p.clients}": p.failures for p in phases if p.failures}
    print(f"\nfailed requests: {failures or 'none'}")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as name:
        tmp = Path(name)
        async with (
            bus.embedded(bus.ServerSettings(), tmp / "nats") as server,
            bus.connect(bus.Settings(url=server.url), name="bench-rest") as conn,
        ):
            await conn.provision()
            issued = await keys.bootstrap(conn, TENANT)
            assert issued is not None
            env = {
                "SWARM_BUS__URL": server.url,
                "SWARM_DATA_DIR": str(tmp / "data"),
                "SWARM_LOG__LEVEL": "warning",
                "SWARM_GATEWAY__PORT": "0",
                "SWARM_GATEWAY__RATE_PER_SECOND": "1000000",  # the per-key limit is not what is measured
                "SWARM_GATEWAY__RATE_BURST": "1000000",
            }
            async with (
                child(["-m", "swarm.cli", "projector"], env, tmp / "projector.log", None),
                child(["-m", "swarm.cli", "gateway"], env, tmp / "gateway.log", "gateway on ") as gateway_url,
                child([__file__, "--raw-server"], env, tmp / "raw.log", "raw on ") as raw_url,
            ):
                auth = {"Authorization": f"Bearer {issued.token}"}
                project_id = IdSource().new(Kind.PROJECT)
                gateway = Target("gateway", gateway_url, auth, project_id, [])
                raw = Target("raw", raw_url, {}, project_id, [])
                phases = await measure(gateway, raw, conn, args)
    report(phases)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured phase")
    parser.add_argument(
        "--clients", type=lambda s: [int(n) for n in s.split(",")], default=[1, 16], help="concurrent clients"
    )
    parser.add_argument("--raw-server", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    arguments = parse_args()
    if arguments.raw_server:
        asyncio.run(serve_raw())
    else:
        asyncio.run(main(arguments))
