"""Platform overhead per run: command accepted → `run.started`, container opened → Codex's first line, and
the executor's memory per concurrent run.

One embedded nats-server, the scripted model in a child process as the upstream, a Podman API service
and one executor (with a registry replica, so the project command is served) in this process, with
the real runner image and the pinned Codex CLI. Each round runs, in an order rotating from round to
round, three things one after the other:

- **executor**: `StartRun` for the `hello` script, followed to its terminal event. *accepted* is the wall
  time when `Log.send` returns (the publish ack); *stamped* is `RunStarted.at`; *stored* is the
  JetStream timestamp of the `run.started` message.
- **floor**: the same command, under another subject, taken by a `bus.Worker` with the executor's queue
  settings whose handler only decides and appends `run.started` (no lookups): the bus's own floor.
- **raw**: the same `codex exec` (same CODEX_HOME config, prompt, workspace and limits) in a container
  through the same `ContainerBackend`, with no executor and no NATS: the scripted model serves the
  model socket directly.

The executor's backend and the raw side's are wrapped in the same `Timed` backend, which notes when
`open()` is entered, when the container has started and when the first stdout line arrives.

Then `--concurrent` runs of the `slow` script (a 60 s command) run at once; this process's RSS while
they sit in the command, minus its RSS just before, divided by their number, is the executor's memory
per concurrent run. A second batch does the same with tracemalloc on (Python allocations only). The
containers' own memory is the engine's (read from its stats API). The runs are cancelled afterwards.

    .venv/bin/python bench/run_overhead.py [--runs 20] [--warm-up 2] [--concurrent 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import structlog
from aiohttp import web

import bus
from bus.log import MSG_ID
from executors import codex, workspace
from executors.registry import Registry
from executors.role import executor
from executors.sandbox import (
    MODEL_PORT,
    RUNNER_IMAGE,
    ContainerBackend,
    Exit,
    Resources,
    Sandbox,
    SandboxError,
    Spec,
    ensure_image,
    podman_service,
)
from executors.scripted import ScriptedModel
from executors.settings import Settings, Upstream
from schemas import (
    AnyEvent,
    CancelRun,
    CommandStarted,
    Context,
    CreateProject,
    IdSource,
    Kind,
    LocalSource,
    RunStarted,
    RunSucceeded,
    StartRun,
    decode_command,
    decode_event,
    encode,
    subjects,
)
from schemas.chain import digest
from schemas.run import TerminalEvents
from schemas.run_state import ExecutorInfo, RetryPolicy, RunState, decide

TENANT, FLOOR_TENANT, ACTOR = "bench", "floor", "key_bench"
HELLO = "[script:hello] create hello.txt"
SLOW = "[script:slow] wait a minute"
FLOOR_STARTS = f"swarm.{FLOOR_TENANT}.cmd.ping.*.start"  # outside the executor's and registry's filters
CODEX_DIR = Path(__file__).resolve().parents[1] / ".codex-cli"
ids = IdSource()

# Timing the sandbox: one wrapper for the executor's backend and for the raw side.


@dataclass
class Startup:
    """Seconds (perf_counter) when `open()` was entered, the container had started, the first line came."""

    entered: float
    started: float = 0.0
    first_line: float = 0.0

    @property
    def total_ms(self) -> float:
        return (self.first_line - self.entered) * 1000

    @property
    def engine_ms(self) -> float:
        return (self.started - self.entered) * 1000


class _FirstLine:
    """A sandbox whose first stdout line is timed; everything else is the wrapped sandbox's."""

    def __init__(self, inner: Sandbox, startup: Startup) -> None:
        self._inner, self._startup = inner, startup

    async def lines(self) -> AsyncIterator[bytes]:
        async for line in self._inner.lines():
            if not self._startup.first_line:
                self._startup.first_line = time.perf_counter()
            yield line

    async def wait(self) -> Exit:
        return await self._inner.wait()

    async def stop(self, grace: float) -> None:
        await self._inner.stop(grace)


class Timed:
    """A `Backend` delegating to a `ContainerBackend`, keeping a `Startup` per run id it opened."""

    def __init__(self, inner: ContainerBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.startups: dict[str, Startup] = {}

    @property
    def version(self) -> str:
        return self.inner.version

    @property
    def safe(self) -> bool:
        return self.inner.safe

    async def check(self) -> None:
        await self.inner.check()

    async def discard(self, run_id: str) -> None:
        await self.inner.discard(run_id)

    @contextlib.asynccontextmanager
    async def open(self, spec: Spec) -> AsyncIterator[Sandbox]:
        startup = self.startups[spec.run_id] = Startup(time.perf_counter())
        async with self.inner.open(spec) as sandbox:
            startup.started = time.perf_counter()
            yield _FirstLine(sandbox, startup)


# Following runs: one ordered consumer over every run's events, dispatching by run id.


@dataclass
class Watched:
    accepted: datetime | None = None
    stamped: datetime | None = None
    stored: datetime | None = None
    commanding: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    terminal: AnyEvent | None = None

    @property
    def stamped_ms(self) -> float:
        return _ms(self.accepted, self.stamped)

    @property
    def stored_ms(self) -> float:
        return _ms(self.accepted, self.stored)


def _ms(since: datetime | None, until: datetime | None) -> float:
    assert since is not None
    assert until is not None
    return (until - since).total_seconds() * 1000


class Watcher:
    def __init__(self, conn: bus.Connection) -> None:
        self._conn = conn
        self.runs: dict[str, Watched] = {}

    def watch(self, run_id: str) -> Watched:
        return self.runs.setdefault(run_id, Watched())

    async def run(self, after: int) -> None:
        async for record in self._conn.log.follow("swarm.*.evt.run.>", after_seq=after):
            event = decode_event(record.data)
            self._note(self.watch(record.subject.rsplit(".", 1)[1]), event, record)

    @staticmethod
    def _note(watched: Watched, event: AnyEvent, record: bus.Record) -> None:
        if isinstance(event, RunStarted):
            watched.stamped, watched.stored = event.at, record.time
        elif isinstance(event, CommandStarted):
            watched.commanding.set()
        elif isinstance(event, TerminalEvents):
            watched.terminal = event
            watched.ended.set()


# The floor: the executor's queue settings and its decide + append, without its lookups.


class Floor:
    def __init__(self, conn: bus.Connection, settings: Settings) -> None:
        self._conn = conn
        self._info = ExecutorInfo(executor_id=ids.new(Kind.EXECUTOR), sandbox="none")
        queue = bus.Queue(durable="bench-floor", subject=FLOOR_STARTS, ack_wait=settings.ack_wait)
        self.worker = bus.Worker(
            conn.js, conn.settings.stream, queue, self._handle, concurrency=settings.concurrency
        )

    async def _handle(self, delivery: bus.Delivery) -> None:
        command = decode_command(delivery.data)
        assert isinstance(command, StartRun)
        context = Context(now=datetime.now(UTC), actor=self._info.executor_id, ids=ids)
        events = decide(RunState(run_id=command.run_id), command, context, self._info, RetryPolicy())
        await self._conn.log.append_all(events, bus.START)

    async def ping(self, watcher: Watcher) -> Watched:
        command = _start(FLOOR_TENANT, ids.new(Kind.PROJECT), HELLO)
        data = encode(command)
        subject = f"swarm.{FLOOR_TENANT}.cmd.ping.{command.run_id}.start"
        watched = watcher.watch(command.run_id)
        await self._conn.js.publish(subject, data, headers={MSG_ID: command.id, bus.DIGEST: digest(data)})
        watched.accepted = datetime.now(UTC)
        await _until(lambda: watched.stored is not None, 10)
        return watched


def _start(tenant: str, project_id: str, instructions: str) -> StartRun:
    return StartRun(
        id=ids.new(Kind.COMMAND),
        at=datetime.now(UTC),
        tenant=tenant,
        actor=ACTOR,
        run_id=ids.new(Kind.RUN),
        project_id=project_id,
        instructions=instructions,
    )


async def _until(condition: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110  # the follower sets plain fields; polling is enough here
            await asyncio.sleep(0.002)


# The three sides of a round.


@dataclass
class Rig:
    """Everything the rounds use; `project_id` is set once the registry has created the project."""

    conn: bus.Connection
    settings: Settings
    timed: Timed
    engine_url: str
    watcher: Watcher
    floor: Floor
    project: Path
    raw_dir: Path
    raw_socket: Path
    project_id: str = ""


async def executor_run(rig: Rig, instructions: str = HELLO, within: float = 60) -> tuple[str, Watched]:
    command = _start(TENANT, rig.project_id, instructions)
    watched = rig.watcher.watch(command.run_id)
    await rig.conn.log.send(command)
    watched.accepted = datetime.now(UTC)
    if instructions == HELLO:
        async with asyncio.timeout(within):
            await watched.ended.wait()
        if not isinstance(watched.terminal, RunSucceeded):
            raise SystemExit(f"run {command.run_id} ended with {watched.terminal}")
    return command.run_id, watched


async def raw_run(rig: Rig, within: float = 60) -> str:
    """`codex exec` in a container through the same backend wrapper, with no executor around it."""
    run_id = f"raw-{uuid.uuid4().hex[:12]}"
    directory = rig.raw_dir / run_id
    await workspace.from_local(LocalSource(path=str(rig.project)), directory / "workspace")
    spec = _raw_spec(rig.settings, run_id, directory, rig.raw_socket)
    try:
        async with asyncio.timeout(within), rig.timed.open(spec) as sandbox:
            async for _ in sandbox.lines():
                pass
            exit_ = await sandbox.wait()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if exit_.code != 0:
        raise SystemExit(f"raw codex exec exited with {exit_.code}: {exit_.stderr[-500:]}")
    return run_id


def _raw_spec(settings: Settings, run_id: str, directory: Path, socket: Path) -> Spec:
    """What `Run._spec` builds for a run, with the model socket served by the scripted model itself."""
    home, sandbox = directory / "codex-home", settings.sandbox
    base_url = f"http://127.0.0.1:{MODEL_PORT}/v1"
    idle_ms = 1000 * settings.idle_seconds
    codex.write_home(home, base_url, settings.upstream.model, settings.codex_retries, idle_ms)
    return Spec(
        run_id=run_id,
        command=codex.command(HELLO),
        workspace=directory / "workspace",
        codex_home=home,
        model_socket=socket,
        env={codex.TOKEN_VARIABLE: "raw"},
        resources=Resources(
            memory_bytes=sandbox.memory_mb << 20,
            cpus=sandbox.cpus,
            pids=sandbox.pids,
            file_size_bytes=sandbox.file_size_mb << 20,
        ),
    )


@dataclass
class Results:
    executor: list[Watched] = field(default_factory=list)
    floor: list[Watched] = field(default_factory=list)
    executor_open: list[Startup] = field(default_factory=list)
    raw_open: list[Startup] = field(default_factory=list)


async def rounds(rig: Rig, n: int, first: int = 0) -> Results:
    results = Results()

    async def run_executor() -> None:
        run_id, watched = await executor_run(rig)
        results.executor.append(watched)
        results.executor_open.append(rig.timed.startups[run_id])

    async def run_raw() -> None:
        results.raw_open.append(rig.timed.startups[await raw_run(rig)])

    async def run_floor() -> None:
        results.floor.append(await rig.floor.ping(rig.watcher))

    sides: list[Callable[[], Awaitable[None]]] = [run_executor, run_raw, run_floor]
    for i in range(first, first + n):
        for side in sides[i % 3 :] + sides[: i % 3]:
            await side()
    return results


# Memory per concurrent run.


@dataclass(frozen=True, slots=True)
class Phase:
    """One sample source while no slow run is in flight (idle) and while `runs` of them are (busy)."""

    idle_mib: float
    busy_mib: float
    runs: int
    container_mib: list[float]

    @property
    def per_run_mib(self) -> float:
        return (self.busy_mib - self.idle_mib) / self.runs


@dataclass(frozen=True, slots=True)
class Memory:
    before_runs_mib: float  # RSS once the executor was ready, before its first run
    rss: Phase
    traced: Phase  # Python allocations (tracemalloc), started just before the idle samples


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def traced_mib() -> float:
    return tracemalloc.get_traced_memory()[0] / 2**20


async def memory(rig: Rig, k: int, before_runs_mib: float) -> Memory:
    """RSS with `k` slow runs in flight against RSS before; then the same with tracemalloc on.

    Two phases, because tracemalloc's own tables would count in the RSS. The RSS figure is a lower
    bound: memory the earlier runs freed is reused before the process grows.
    """
    rss = await _phase(rig, k, rss_mib)
    tracemalloc.start()
    try:
        traced = await _phase(rig, k, traced_mib)
    finally:
        tracemalloc.stop()
    return Memory(before_runs_mib, rss, traced)


async def _phase(rig: Rig, k: int, sample: Callable[[], float]) -> Phase:
    await asyncio.sleep(1.0)  # let the last runs' threads and buffers settle
    idle = statistics.median([await _sampled(0.1, sample) for _ in range(5)])
    started = [await executor_run(rig, SLOW) for _ in range(k)]
    try:
        async with asyncio.timeout(60):
            for _, watched in started:
                await watched.commanding.wait()
        busy = statistics.median([await _sampled(0.2, sample) for _ in range(10)])
        engine = rig.timed.inner, rig.engine_url
        containers = await asyncio.gather(*(_container_mib(*engine, run_id) for run_id, _ in started))
    finally:
        for run_id, _ in started:
            await rig.conn.log.send(_cancel(run_id))
        async with asyncio.timeout(30):
            for _, watched in started:
                await watched.ended.wait()
    return Phase(idle, busy, k, [m for m in containers if m is not None])


async def _sampled(pause: float, sample: Callable[[], float]) -> float:
    await asyncio.sleep(pause)
    return sample()


def _cancel(run_id: str) -> CancelRun:
    return CancelRun(
        id=ids.new(Kind.COMMAND),
        at=datetime.now(UTC),
        tenant=TENANT,
        actor=ACTOR,
        run_id=run_id,
        reason="bench",
    )


async def _container_mib(backend: ContainerBackend, url: str, run_id: str) -> float | None:
    """The container's memory usage as its engine reports it (page cache included), or None."""
    names = await backend.containers(run_id)
    if not names:
        return None
    return await asyncio.to_thread(_stats_mib, url, names[0])


def _stats_mib(url: str, name: str) -> float | None:
    client = docker.DockerClient(base_url=url, timeout=30)
    try:
        stats: dict[str, Any] = client.api.stats(name, stream=False)
    except docker.errors.DockerException:
        return None
    finally:
        client.close()
    usage = stats.get("memory_stats", {}).get("usage")
    return usage / 2**20 if usage else None


# Report


def p(values: list[float], q: int) -> float:
    """The q-th percentile, interpolated (with 20 values, p99 lies between the two largest)."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _row(label: str, values: list[float]) -> str:
    return f"{label:44} {p(values, 50):>8.1f} {p(values, 99):>8.1f} {min(values):>8.1f} {max(values):>8.1f}"


def report(results: Results, mem: Memory, goal_ms: float) -> None:
    """The latency table and the memory lines, then the goal and the two ratios."""
    ex, fl = results.executor, results.floor
    eo, ro = results.executor_open, results.raw_open
    print(f"\n{len(ex)} rounds (executor, floor and raw in rotating order)")
    print(f"{'ms':44} {'p50':>8} {'p99':>8} {'min':>8} {'max':>8}")
    print(_row("accepted → run.started stored (executor)", [w.stored_ms for w in ex]))
    print(_row("accepted → run.started stamped `at` (executor)", [w.stamped_ms for w in ex]))
    print(_row("accepted → run.started stored (floor)", [w.stored_ms for w in fl]))
    print(_row("open() → first Codex line (executor)", [s.total_ms for s in eo]))
    print(_row("  of which open() → container started", [s.engine_ms for s in eo]))
    print(_row("open() → first Codex line (raw)", [s.total_ms for s in ro]))
    print(_row("  of which open() → container started", [s.engine_ms for s in ro]))
    _memory(mem)
    for edge in ("stamped", "stored"):
        p99 = p([getattr(w, f"{edge}_ms") for w in ex], 99)
        verdict = "met" if p99 <= goal_ms else "MISSED"
        print(f"accept → run.started ({edge}) p99 {p99:.1f} ms: goal ≤ {goal_ms:.0f} ms {verdict}")
    ratio = p([w.stored_ms for w in ex], 50) / p([w.stored_ms for w in fl], 50)
    print(f"accept → run.started ratio executor/floor (p50, stored): {ratio:.2f}")
    ratio = p([s.total_ms for s in eo], 50) / p([s.total_ms for s in ro], 50)
    print(f"open → first line ratio executor/raw (p50): {ratio:.2f}")


def _memory(mem: Memory) -> None:
    rss, traced = mem.rss, mem.traced
    containers = ", ".join(f"{m:.0f}" for m in rss.container_mib) or "n/a"
    print(
        f"executor RSS: {mem.before_runs_mib:.1f} MiB before the first run, {rss.idle_mib:.1f} idle after "
        f"the rounds, {rss.busy_mib:.1f} with {rss.runs} slow runs: {rss.per_run_mib:.2f} MiB per run"
    )
    print(
        f"Python allocations (tracemalloc): {traced.idle_mib:.2f} MiB idle, {traced.busy_mib:.2f} with "
        f"{traced.runs} slow runs: {traced.per_run_mib:.2f} MiB per concurrent run"
    )
    print(f"containers (outside this process, engine stats): {containers} MiB")


# Setup


@contextlib.asynccontextmanager
async def upstream_process(directory: Path) -> AsyncIterator[str]:
    """The scripted model in a child process (its memory is not the executor's)."""
    output = directory / "upstream.log"
    with output.open("w") as sink:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "executors.scripted", stdout=sink, stderr=sink
        )
    try:
        async with asyncio.timeout(20):
            while not (found := re.search(r"scripted model at (\S+)", output.read_text())):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        yield found.group(1)
    finally:
        child.terminate()
        await child.wait()


@contextlib.asynccontextmanager
async def model_socket(directory: Path) -> AsyncIterator[Path]:
    """The scripted model on a unix socket the sandbox's user can reach, for the raw side."""
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    socket = directory / "model.sock"
    runner = web.AppRunner(ScriptedModel().app(), access_log=None)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(socket)).start()
        socket.chmod(0o666)
        yield socket
    finally:
        await runner.cleanup()


async def create_project(conn: bus.Connection, root: Path) -> str:
    (root / "src").mkdir(parents=True)
    (root / "README.md").write_text("# sample\n")
    (root / "src" / "main.py").write_text("print('sample')\n")
    project_id = ids.new(Kind.PROJECT)
    command = CreateProject(
        id=ids.new(Kind.COMMAND),
        at=datetime.now(UTC),
        tenant=TENANT,
        actor=ACTOR,
        project_id=project_id,
        name="bench",
        source=LocalSource(path=str(root)),
    )
    await conn.log.send(command)
    subject = subjects.events(TENANT, "project", project_id)
    async with asyncio.timeout(10):
        while (await conn.log.position(subject)).seq == 0:  # noqa: ASYNC110  # the registry appends it
            await asyncio.sleep(0.01)
    return project_id


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as name:
        tmp = Path(name)
        async with (
            bus.embedded(bus.ServerSettings(), tmp / "nats") as server,
            bus.connect(bus.Settings(url=server.url), name="bench-overhead") as conn,
            upstream_process(tmp) as model_url,
            podman_service(tmp / "podman" / "podman.sock") as engine_url,
            model_socket(tmp / "raw-model") as raw_socket,
        ):
            await conn.provision()
            await ensure_image(engine_url, RUNNER_IMAGE, CODEX_DIR)
            settings = Settings(
                work_dir=str(tmp / "executor"),
                concurrency=args.concurrent,
                cancel_grace=2.0,
                upstream=Upstream(base_url=model_url),
            )
            timed = Timed(ContainerBackend(engine_url, RUNNER_IMAGE))
            await timed.check()
            (tmp / "raw").mkdir()
            watcher, floor = Watcher(conn), Floor(conn, settings)
            rig = Rig(
                conn, settings, timed, engine_url, watcher, floor, tmp / "project", tmp / "raw", raw_socket
            )
            try:
                results, mem = await serve(rig, args)
            finally:
                await _remove_leftovers(timed)
    report(results, mem, args.goal_ms)


async def serve(rig: Rig, args: argparse.Namespace) -> tuple[Results, Memory]:
    """Executor, registry, floor worker and follower in one task group; the workers stop in order."""
    conn, settings = rig.conn, rig.settings
    registry = Registry(conn)
    async with executor(conn, settings, rig.timed) as replica, asyncio.TaskGroup() as tasks:
        following = tasks.create_task(rig.watcher.run(await conn.log.end()))
        for worker in (replica.run(), registry.run(), rig.floor.worker.run()):
            tasks.create_task(worker)
        await replica.wait_ready()
        before_runs = rss_mib()
        try:
            rig.project_id = await create_project(conn, rig.project)
            await rounds(rig, args.warm_up)
            results = await rounds(rig, args.runs, first=args.warm_up)
            return results, await memory(rig, args.concurrent, before_runs)
        finally:
            await rig.floor.worker.shutdown(1.0)
            await registry.shutdown(1.0)
            await replica.shutdown(settings.shutdown_grace)
            following.cancel()


async def _remove_leftovers(timed: Timed) -> None:
    """Every container this benchmark opened should be gone; remove any that is not."""
    for run_id in timed.startups:
        with contextlib.suppress(SandboxError):
            if names := await timed.inner.containers(run_id):
                print(f"removing leftover containers {names}", file=sys.stderr)
                await timed.inner.discard(run_id)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="measured rounds (one run per side each)")
    parser.add_argument("--warm-up", type=int, default=2, help="rounds run first and not counted")
    parser.add_argument("--concurrent", type=int, default=4, help="slow runs at once for the memory figure")
    parser.add_argument("--goal-ms", type=float, default=50.0, help="p99 goal for accept → run.started")
    return parser.parse_args()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main(parse_args()))
