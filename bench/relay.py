"""Relay: run events through JetStream → gateway → WebSocket against raw nats-py subscribers, in one run.

One embedded nats-server; the gateway in a child process (`python -m swarm.cli gateway`); the watchers
in another child process, so neither shares an event loop with the publisher (this process). For 1, 10
and 100 watchers, each phase starts a fresh run (a `StartRun` command on the log; no executor) and
appends `run.agent_message` events to it with `Log.append`, once at a fixed rate and once as fast as
serial appends go. Each side is measured on its own, one after the other, in an order that alternates:

- **gateway**: N WebSockets on `/v1/runs/{run_id}/events` (first-frame auth with an admin key from
  `swarm.keys.bootstrap`), each decoding its `event` frames;
- **raw**: N nats-py connections, each with a core subscription on the run's subject, decoding the
  event itself.

Latency is the watcher's wall clock on receipt minus the event's `at`, stamped just before its append,
so both sides include the publish. Deliveries/s is every watcher's events over the time from the first
append to the last receipt. One appender per run subject waits for each ack (the expected sequence
comes from the previous one), which caps the offered rate near 4k events/s (notes/perf-ceilings.md).
CPU is the gateway's and the watcher process's user + system time per delivery (the gateway's from /proc).

    .venv/bin/python bench/relay.py [--rate 1000] [--seconds 2] [--burst 2000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import msgspec
import nats
import structlog
from nats.aio.msg import Msg

import bus
from schemas import AgentMessage, Body, IdSource, Kind, StartRun, subjects
from swarm import keys

TENANT = "bench"
ACTOR = "exe_bench"
TEXT = "I ran the tests; two failures remain in the parser, fixing the off-by-one now. " * 3
WATCHERS = (1, 10, 100)
_TICK = os.sysconf("SC_CLK_TCK")


# The watcher child: `relay.py --watch SPEC` connects, says `connected`, waits for the warm-up event on
# every watcher, says `ready`, then reports one `Seen` line once every watcher has its events.


class Spec(msgspec.Struct, frozen=True, kw_only=True):
    side: str  # "gateway" or "raw"
    url: str  # the gateway's base URL, or the NATS URL
    key: str
    run_id: str
    subject: str
    watchers: int
    events: int  # measured events, after one warm-up event
    timeout: float


class Seen(msgspec.Struct, frozen=True, kw_only=True):
    received: int
    latencies_ms: list[float]
    last: float  # wall clock of the last receipt
    cpu: float
    closes: list[int]  # WebSocket close codes seen before the end


class Stamp(msgspec.Struct, frozen=True):
    at: datetime


class Frame(msgspec.Struct, frozen=True):
    type: str
    event: Stamp | None = None


class LogLine(msgspec.Struct):
    event: str = "?"


_frame = msgspec.json.Decoder(Frame)
_log_line = msgspec.json.Decoder(LogLine)
_stamp = msgspec.json.Decoder(Stamp)


class Watcher:
    """One watcher's receipts: the warm-up event readies it, the next `events` are timed."""

    def __init__(self, events: int) -> None:
        self.latencies: list[float] = []
        self.last = 0.0
        self.warm = asyncio.Event()
        self.done = asyncio.Event()
        self._events = events

    def saw(self, stamp: Stamp) -> None:
        now = time.time()
        if not self.warm.is_set():
            self.warm.set()
            return
        self.latencies.append((now - stamp.at.timestamp()) * 1_000)
        self.last = now
        if len(self.latencies) >= self._events:
            self.done.set()


async def ws_watch(session: aiohttp.ClientSession, spec: Spec, watcher: Watcher, closes: list[int]) -> None:
    async with session.ws_connect(f"{spec.url}/v1/runs/{spec.run_id}/events", max_msg_size=0) as ws:
        await ws.send_json({"type": "auth", "key": spec.key})
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            frame = _frame.decode(message.data)
            if frame.event is not None:
                watcher.saw(frame.event)
                if watcher.done.is_set():
                    return
        closes.append(ws.close_code or 0)
        watcher.warm.set()
        watcher.done.set()


@contextlib.asynccontextmanager
async def raw_watchers(spec: Spec, watchers: list[Watcher]) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for watcher in watchers:
            nc = await nats.connect(spec.url, name="bench-raw")
            stack.push_async_callback(nc.close)

            async def on_msg(msg: Msg, watcher: Watcher = watcher) -> None:
                watcher.saw(_stamp.decode(msg.data))

            await nc.subscribe(spec.subject, cb=on_msg)
            await nc.flush()
        yield


async def watch(spec: Spec) -> Seen:
    watchers = [Watcher(spec.events) for _ in range(spec.watchers)]
    closes: list[int] = []
    tasks: list[asyncio.Task[None]] = []
    async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as group:
        if spec.side == "raw":
            await stack.enter_async_context(raw_watchers(spec, watchers))
        else:
            session = await stack.enter_async_context(aiohttp.ClientSession())
            tasks = [group.create_task(ws_watch(session, spec, w, closes)) for w in watchers]
        say("connected")
        await asyncio.gather(*(w.warm.wait() for w in watchers))
        say("ready")
        cpu = time.process_time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(spec.timeout):
                await asyncio.gather(*(w.done.wait() for w in watchers))
        if spec.side == "gateway":
            for task in tasks:
                task.cancel()
    latencies = [ms for w in watchers for ms in w.latencies]
    last = max(w.last for w in watchers)
    cpu = time.process_time() - cpu
    return Seen(received=len(latencies), latencies_ms=latencies, last=last, cpu=cpu, closes=closes)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# The parent: nats-server, the gateway child, one watcher child per phase, and the publisher.


@dataclass(frozen=True, slots=True)
class Phase:
    side: str
    watchers: int
    rate: float | None  # events/s offered; None: as fast as serial appends go
    events: int
    seen: Seen
    started: float
    appended: float  # wall clock when the last append was acknowledged
    gateway_cpu: float

    @property
    def deliveries(self) -> float:
        return self.seen.received / max(1e-9, self.seen.last - self.started)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.seen.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def offered(self) -> float:
        return self.events / max(1e-9, self.appended - self.started)

    def cpu_us(self, seconds: float) -> float:
        return seconds / max(1, self.seen.received) * 1e6


def cpu_of(pid: int) -> float:
    """A process's user + system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@contextlib.asynccontextmanager
async def gateway_process(nats_url: str, data_dir: Path) -> AsyncIterator[tuple[str, int]]:
    """`swarm gateway` in a child process on a free port: its base URL and pid."""
    env = {
        **os.environ,
        "SWARM_BUS__URL": nats_url,
        "SWARM_GATEWAY__PORT": "0",
        "SWARM_LOG__LEVEL": "warning",
        "SWARM_DATA_DIR": str(data_dir),
    }
    data_dir.mkdir(parents=True)
    with (data_dir / "gateway.log").open("wb") as sink:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "swarm.cli", "gateway", env=env, stdout=asyncio.subprocess.PIPE, stderr=sink
        )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(30):
            line = (await child.stdout.readline()).decode()
        if not line.startswith("gateway on "):
            raise SystemExit(f"the gateway did not start: {line!r}")
        yield line.removeprefix("gateway on ").strip(), child.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        await child.wait()


class Publisher:
    """Starts runs and appends their events the way an executor does: one append in flight per run."""

    def __init__(self, conn: bus.Connection) -> None:
        self._log = conn.log
        self._ids = IdSource()
        self._project = self._ids.new(Kind.PROJECT)

    async def new_run(self) -> str:
        run_id = self._ids.new(Kind.RUN)
        command = StartRun(
            id=self._ids.new(Kind.COMMAND),
            at=datetime.now(UTC),
            tenant=TENANT,
            actor=ACTOR,
            run_id=run_id,
            project_id=self._project,
            instructions="relay benchmark",
        )
        await self._log.send(command)
        return run_id

    async def append(self, run_id: str, n: int, rate: float | None, at: bus.Position) -> bus.Position:
        start = time.perf_counter()
        for i in range(n):
            if rate is not None and (ahead := start + i / rate - time.perf_counter()) > 0:
                await asyncio.sleep(ahead)
            at = await self._log.append(self._message(run_id, i), at)
        return at

    def _message(self, run_id: str, i: int) -> AgentMessage:
        return AgentMessage(
            id=self._ids.new(Kind.EVENT),
            at=datetime.now(UTC),
            tenant=TENANT,
            actor=ACTOR,
            run_id=run_id,
            item_id=f"item_{i}",
            text=Body(text=TEXT),
        )


@dataclass(frozen=True, slots=True)
class System:
    publisher: Publisher
    nats_url: str
    gateway_url: str
    gateway_pid: int
    key: str


async def phase(system: System, side: str, watchers: int, rate: float | None, events: int) -> Phase:
    run_id = await system.publisher.new_run()
    spec = Spec(
        side=side,
        url=system.gateway_url if side == "gateway" else system.nats_url,
        key=system.key,
        run_id=run_id,
        subject=subjects.events(TENANT, "run", run_id),
        watchers=watchers,
        events=events,
        timeout=30.0,
    )
    argv = (__file__, "--watch", msgspec.json.encode(spec).decode())
    child = await asyncio.create_subprocess_exec(sys.executable, *argv, stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    try:
        await expect(child.stdout, "connected")
        at = await system.publisher.append(run_id, 1, None, bus.START)
        await expect(child.stdout, "ready")
        gateway_cpu = cpu_of(system.gateway_pid)
        started = time.time()
        await system.publisher.append(run_id, events, rate, at)
        appended = time.time()
        seen = msgspec.json.decode(await child.stdout.read(), type=Seen)
        gateway_cpu = cpu_of(system.gateway_pid) - gateway_cpu
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
    return Phase(side, watchers, rate, events, seen, started, appended, gateway_cpu)


async def expect(stream: asyncio.StreamReader, word: str) -> None:
    async with asyncio.timeout(60):
        line = (await stream.readline()).decode().strip()
    if line != word:
        raise SystemExit(f"the watcher child said {line!r}, expected {word!r}")


async def measure(system: System, args: argparse.Namespace) -> list[tuple[Phase, Phase]]:
    pairs, flip = [], False
    for _ in range(args.rounds):
        for watchers in WATCHERS:
            for rate, events in ((args.rate, int(args.rate * args.seconds)), (None, args.burst)):
                order = ("raw", "gateway") if flip else ("gateway", "raw")
                done = {side: await phase(system, side, watchers, rate, events) for side in order}
                pairs.append((done["gateway"], done["raw"]))
                flip = not flip
    return pairs


def report(pairs: list[tuple[Phase, Phase]]) -> None:
    print(
        "\ndeliveries/s: events received by all watchers / (last receipt - first append); latency: receipt -"
        " the event's `at`\nus: CPU us per delivery of the gateway process (gw) and the watcher process"
        " (client); core: the gateway's CPU share"
    )
    gw_head = f"{'gw deliv/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'gw us':>5} {'core':>4} {'client':>6}"
    raw_head = f"{'raw deliv/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'client':>6}"
    print(f"{'watchers':>8} {'offered/s':>9} | {gw_head} | {raw_head} | {'ratio':>5} {'lost':>5}")
    for gw, raw in pairs:
        print(
            f"{gw.watchers:>8} {gw.offered:>9,.0f} | {side(gw, True)} | {side(raw, False)} | {tail(gw, raw)}"
        )
    ratios = [gw.deliveries / raw.deliveries for gw, raw in pairs if gw.rate is None]
    print(f"deliveries/s ratio gateway/raw, as fast as possible (median): {statistics.median(ratios):.2f}")


def side(p: Phase, gateway: bool) -> str:
    rate = f"{p.deliveries:>{10 if gateway else 11},.0f} {p.quantile(0.5):>7.1f} {p.quantile(0.99):>7.1f}"
    if not gateway:
        return f"{rate} {p.cpu_us(p.seen.cpu):>6.1f}"
    core = p.gateway_cpu / max(1e-9, p.seen.last - p.started)
    return f"{rate} {p.cpu_us(p.gateway_cpu):>5.0f} {core:>4.0%} {p.cpu_us(p.seen.cpu):>6.1f}"


def tail(gw: Phase, raw: Phase) -> str:
    lost = gw.watchers * gw.events - gw.seen.received
    closed = f"  closed: {sorted(set(gw.seen.closes))} x{len(gw.seen.closes)}" if gw.seen.closes else ""
    return f"{gw.deliveries / raw.deliveries:>5.2f} {lost:>5}{closed}"


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        async with (
            bus.embedded(bus.ServerSettings(), Path(tmp) / "nats") as server,
            bus.connect(bus.Settings(url=server.url), name="bench-publisher") as conn,
        ):
            await conn.provision()
            issued = await keys.bootstrap(conn, TENANT)
            assert issued is not None
            async with gateway_process(server.url, Path(tmp) / "gateway") as (url, pid):
                system = System(Publisher(conn), server.url, url, pid, issued.token)
                pairs = await measure(system, args)
            troubles = warnings(Path(tmp) / "gateway" / "gateway.log", server.log_file)
    report(pairs)
    print(f"gateway warnings and nats-server slow consumers: {troubles or 'none'}")


def warnings(gateway_log: Path, server_log: Path) -> dict[str, int]:
    """What went wrong on the way: the gateway's warnings by event, the server's slow-consumer cuts."""
    seen: Counter[str] = Counter()
    for line in gateway_log.read_text().splitlines():
        seen[_log_line.decode(line).event if line.startswith("{") else line[:60]] += 1
    seen["slow consumer"] = server_log.read_text().count("Slow Consumer Detected")
    return {name: n for name, n in seen.items() if n}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1_000.0, help="events/s in the fixed-rate phase")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the fixed-rate phase")
    parser.add_argument("--burst", type=int, default=2_000, help="events appended as fast as possible")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over every watcher count")
    parser.add_argument("--watch", metavar="SPEC", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    arguments = parse_args()
    if arguments.watch:
        seen = asyncio.run(watch(msgspec.json.decode(arguments.watch, type=Spec)))
        sys.stdout.buffer.write(msgspec.json.encode(seen))
    else:
        asyncio.run(main(arguments))
