"""Projection throughput: `Projector.run(until_end=True)` against a bare nats-py replay of the same log.

Both sides read the whole `SWARM` stream of one embedded nats-server, in the same run:

- **ours**: a fresh DuckDB file and `Projector.run(until_end=True)`: consume (in its reader child
  process, `bus._piped`), decode, fold, write and checkpoint, every batch in one transaction;
- **raw**: plain `nats.connect` and an ordered push consumer from sequence 1 whose callback only counts.

The log is a realistic mix written with `conn.log.append` across many runs at once: a start command,
`run.started`, the workspace, plan, reasoning, model calls, shell commands, file changes, the agent's
message, turn usage, an artifact and a terminal event (succeeded, failed, timed out, or cancelled after a
cancel command). Sides alternate which goes first each round. With `--million`, the log is grown to 1M
messages, a rebuild of it is timed in a child process (its peak RSS is that process's alone), and the
dashboard views are queried over the result.

    .venv/bin/python bench/project.py [--events 250000] [--rounds 3] [--max-batch 40000] [--million]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import itertools
import json
import logging
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import nats
import structlog
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

import bus
from projectors.prices import load as load_prices
from projectors.projector import Projector
from projectors.rebuild import RebuildFailed, rebuild
from projectors.settings import MAX_BATCH
from projectors.store import VIEWS, LogGap, Store, open_store
from schemas import (
    AgentMessage,
    AnyEvent,
    ArtifactStored,
    BlobRef,
    Body,
    CancelRun,
    CommandExecuted,
    CommandStarted,
    CreateProject,
    FailureReason,
    FileChange,
    FilesChanged,
    GitSource,
    IdSource,
    Kind,
    ModelCallRecorded,
    PlanUpdated,
    ProjectCreated,
    Reasoning,
    RunCancelled,
    RunFailed,
    RunStarted,
    RunSucceeded,
    RunSummary,
    RunTimedOut,
    StartRun,
    TodoItem,
    TurnCompleted,
    Usage,
    WorkspacePrepared,
)

TENANTS = ("acme", "globex", "initech")
PROJECTS_PER_TENANT = 8
CLIENT, EXECUTOR, REGISTRY = "key_bench", "exe_bench-1", "sys_registry"
T0 = datetime(2026, 10, 1, tzinfo=UTC)
SPREAD = timedelta(days=30)  # queue times spread over a month, so the per-day views have days to group
USAGE = Usage(input_tokens=14_000, cached_input_tokens=9_000, output_tokens=800, reasoning_output_tokens=256)
PLAN = [
    TodoItem(text="reproduce the failure", completed=True),
    TodoItem(text="fix it"),
    TodoItem(text="verify"),
]
DONE = [TodoItem(text=item.text, completed=True) for item in PLAN]
DIFF = BlobRef(sha256="d" * 64, size=2_048, media_type="text/x-diff")
OUTPUT = Body(text="F.\nFAILED tests/test_cart.py::test_total - assert 10.0 == 10.01\n1 failed, 1 passed\n")
ids = IdSource()


# The workload


def run_messages(
    index: int, runs: int, projects: list[tuple[str, str]]
) -> list[StartRun | CancelRun | AnyEvent]:
    """One run's messages in log order: 17 or 18, depending on how it ends (index picks the outcome)."""
    tenant, project_id = projects[index % len(projects)]
    queued = T0 + SPREAD * index / max(runs, 1)
    start = StartRun(
        id=ids.new(Kind.COMMAND), at=queued, tenant=tenant, actor=CLIENT, run_id=ids.new(Kind.RUN),
        project_id=project_id, instructions="Make tests/test_cart.py pass.",
        task_type=("code", "review")[index % 2],
    )  # fmt: skip
    clock = itertools.count(index % 7 + 1)

    def env() -> dict[str, Any]:
        at = queued + timedelta(seconds=5 * next(clock))
        return {"id": ids.new(Kind.EVENT), "at": at, "tenant": tenant, "actor": EXECUTOR,
                "causation_id": start.id, "run_id": start.run_id}  # fmt: skip

    messages: list[StartRun | CancelRun | AnyEvent] = [
        start,
        RunStarted(**env(), attempt=1, executor_id=EXECUTOR, sandbox="docker", codex_version="0.46.0"),
        WorkspacePrepared(**env(), source="git", baseline_commit="3f" * 20, files=42, bytes=183_204),
        PlanUpdated(**env(), item_id="plan", items=PLAN),
        Reasoning(**env(), item_id="item_0", text=Body(text="**Reproducing the failure** first.")),
        ModelCallRecorded(**env(), model="gpt-5.5", status=200, latency_ms=850, usage=USAGE),
        CommandStarted(**env(), item_id="item_1", command="pytest -q tests/test_cart.py"),
        CommandExecuted(**env(), item_id="item_1", command="pytest -q tests/test_cart.py", exit_code=1,
                        status="failed", output=OUTPUT),
        FilesChanged(**env(), item_id="item_2", changes=[FileChange(path="shop/cart.py", kind="update")],
                     status="completed"),
        ModelCallRecorded(**env(), model="gpt-5.5", status=200, latency_ms=640, usage=USAGE),
        CommandStarted(**env(), item_id="item_3", command="pytest -q tests/test_cart.py"),
        CommandExecuted(**env(), item_id="item_3", command="pytest -q tests/test_cart.py", exit_code=0,
                        status="completed", output=Body(text="..\n2 passed in 0.04s\n")),
        PlanUpdated(**env(), item_id="plan", items=DONE),
        AgentMessage(**env(), item_id="item_4", text=Body(text="Fixed the rounding; both tests pass.")),
        TurnCompleted(**env(), usage=USAGE + USAGE),
        ArtifactStored(**env(), name="final.diff", kind="diff", blob=DIFF),
    ]  # fmt: skip
    match index % 20:
        case 0 | 1:
            messages.append(RunFailed(**env(), reason=FailureReason.NONZERO_EXIT, detail="codex exited 1"))
        case 2:
            messages.append(RunTimedOut(**env(), limit="deadline", seconds=1_800))
        case 3:
            at = queued + timedelta(seconds=5 * next(clock))
            messages.append(
                CancelRun(id=ids.new(Kind.COMMAND), at=at, tenant=tenant, actor=CLIENT, run_id=start.run_id)
            )
            messages.append(RunCancelled(**env(), cancelled_by=CLIENT))
        case _:
            summary = RunSummary(
                goal=start.instructions, final_message="Both tests pass.", usage=USAGE + USAGE
            )
            messages.append(RunSucceeded(**env(), summary=summary))
    return messages


async def create_projects(log: bus.Log) -> list[tuple[str, str]]:
    projects = []
    for tenant, n in itertools.product(TENANTS, range(PROJECTS_PER_TENANT)):
        project_id, name = ids.new(Kind.PROJECT), f"p{n}"
        source = GitSource(url=f"https://git.example.com/{tenant}/{name}.git")
        command = CreateProject(
            id=ids.new(Kind.COMMAND), at=T0, tenant=tenant, actor=CLIENT,
            project_id=project_id, name=name, source=source,
        )  # fmt: skip
        await log.send(command)
        created = ProjectCreated(
            id=ids.new(Kind.EVENT), at=T0, tenant=tenant, actor=REGISTRY, causation_id=command.id,
            project_id=project_id, name=name, source=source,
        )  # fmt: skip
        await log.append(created, bus.START)
        projects.append((tenant, project_id))
    return projects


async def write_log(conn: bus.Connection, messages: int, in_flight: int) -> int:
    """Append runs until about `messages` are in the log, `in_flight` runs at a time; return the count."""
    projects = await create_projects(conn.log)
    runs = max(1, (messages - 2 * len(projects)) // 17)
    indexes = iter(range(runs))

    async def writer() -> None:
        for index in indexes:  # the writers share one iterator: each run is written by exactly one
            at = bus.START
            for message in run_messages(index, runs, projects):
                if isinstance(message, StartRun | CancelRun):
                    await conn.log.send(message)
                else:
                    at = await conn.log.append(message, at)

    async with asyncio.TaskGroup() as group:
        for _ in range(in_flight):
            group.create_task(writer())
    info = await conn.js.stream_info(conn.settings.stream)
    return int(info.state.messages)


# The two sides


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    cpu_us: float  # CPU time per message of this process (all threads) and of its finished children


@contextlib.contextmanager
def timed(n: int, into: list[Rate]) -> Iterator[None]:
    gc.collect()
    start, cpu = time.perf_counter(), _cpu()
    yield
    into.append(Rate(n / (time.perf_counter() - start), (_cpu() - cpu) / n * 1e6))


def _cpu() -> float:
    """CPU seconds of this process and of the children it has waited for (the projector's log reader)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


async def raw_replay(url: str, n: int) -> Rate:
    """The baseline: an ordered push consumer from sequence 1 whose callback only counts."""
    nc = await nats.connect(url, name="bench-raw")
    try:
        js, done, seen = nc.jetstream(), asyncio.Event(), itertools.count(1)

        async def count(msg: Msg) -> None:
            if next(seen) == n:
                done.set()

        rates: list[Rate] = []
        with timed(n, rates):
            config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
            # ">" rather than "swarm.>": the server reads a filter of every subject several times slower.
            sub = await js.subscribe(">", stream="SWARM", ordered_consumer=True, cb=count, config=config)
            await done.wait()
        await sub.unsubscribe()
        return rates[0]
    finally:
        await nc.close()


async def project(conn: bus.Connection, path: Path, n: int, max_batch: int) -> Rate:
    rates: list[Rate] = []
    with open_store(path) as store:
        with timed(n, rates):
            await Projector(conn, store, max_batch=max_batch).run(until_end=True)
        row = store.connection.execute("SELECT last_seq, events + skipped FROM checkpoint").fetchone()
        if row != (n, n):
            raise SystemExit(f"checkpoint (last_seq, messages) is {row}, expected ({n}, {n})")
    path.unlink()
    return rates[0]


class ProfiledStore(Store):
    """A store whose batches are applied under cProfile (which follows only the thread it is enabled in)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        super().__init__(con, load_prices())
        self.profile = cProfile.Profile()

    def apply(self, records: Sequence[bus.Record]) -> int:
        self.profile.enable()
        try:
            return super().apply(records)
        finally:
            self.profile.disable()


async def profiled(conn: bus.Connection, path: Path, max_batch: int) -> None:
    """One more projection under cProfile: the event loop's thread and the batch-applying thread apart."""
    with contextlib.closing(duckdb.connect(str(path))) as con:
        store = ProfiledStore(con)
        store.setup()
        loop = cProfile.Profile()
        loop.enable()
        await Projector(conn, store, max_batch=max_batch).run(until_end=True)
        loop.disable()
    for name, profile in (
        ("event loop (consume)", loop),
        ("apply thread (decode, fold, write)", store.profile),
    ):
        print(f"\n--- {name}, by own time")
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)


# The million


def rebuild_in_child(url: str, path: Path, max_batch: int, workers: int) -> dict[str, Any]:
    """Time `rebuild` in a fresh process, so its peak RSS (and its workers') is the rebuild's own."""
    args = [sys.executable, __file__, "--rebuild-child", url, str(path), "--max-batch", str(max_batch)]
    try:
        done = subprocess.run(
            [*args, "--workers", str(workers)], check=True, capture_output=True, text=True, timeout=900
        )
    except subprocess.TimeoutExpired:
        return {"error": "no progress for 15 min (the end of the log never arrived)"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def child(url: str, path: Path, max_batch: int, workers: int) -> None:
    async with bus.connect(bus.Settings(url=url), name="bench-rebuild") as conn:
        start = time.perf_counter()
        try:
            last = await rebuild(conn, path, max_batch=max_batch, workers=workers)
        except (LogGap, RebuildFailed) as exc:
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
            return
        seconds = time.perf_counter() - start
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "seconds": seconds, "last_seq": last,
        "peak_rss_mib": own.ru_maxrss / 1024, "worker_mib": children.ru_maxrss / 1024,  # Linux reports KiB
        "cpu_s": own.ru_utime + own.ru_stime, "workers_cpu_s": children.ru_utime + children.ru_stime,
    }  # fmt: skip
    print(json.dumps(result))


# One million run rows made in SQL (the rebuilt log has ~59k runs): a month of runs from three tenants and
# 24 projects, in the status mix of the workload, with queue waits, durations, tokens and costs.
MILLION_RUNS = """
INSERT INTO runs (run_id, tenant, project_id, task_type, status, queued_at, started_at, finished_at,
                  queue_wait_ms, duration_ms, tokens_in, tokens_cached, tokens_out, cost_usd, failure_reason,
                  events, last_seq)
SELECT 'run_sql' || i, ['acme', 'globex', 'initech'][i % 3 + 1], 'prj_sql' || (i % 24),
       ['code', 'review'][i % 2 + 1],
       CASE WHEN i % 20 < 2 THEN 'failed' WHEN i % 20 = 2 THEN 'timed_out' WHEN i % 20 = 3 THEN 'cancelled'
            WHEN i % 50 = 4 THEN 'running' ELSE 'succeeded' END,
       TIMESTAMPTZ '2026-10-01 00:00:00+00' + to_seconds(i * 2.6),
       TIMESTAMPTZ '2026-10-01 00:00:00+00' + to_seconds(i * 2.6 + i % 7),
       TIMESTAMPTZ '2026-10-01 00:00:00+00' + to_seconds(i * 2.6 + i % 7 + 60 + i % 900),
       (i % 7) * 1000, (60 + i % 900) * 1000, 28000, 18000, 1600, 0.05 + (i % 100) / 1000,
       CASE WHEN i % 20 < 2 THEN 'nonzero_exit' END, 17, i
FROM range(1000000) AS r(i)
"""


def dashboard(path: Path, repeat: int = 7) -> tuple[int, dict[str, float]]:
    """The number of runs and the median milliseconds of each dashboard view, whole, over `path`."""
    medians = {}
    with contextlib.closing(duckdb.connect(str(path), read_only=True)) as con:
        con.execute("SET TimeZone = 'UTC'")
        for view in VIEWS:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                con.execute(f"SELECT * FROM {view}").fetchall()  # noqa: S608 - our view names
                times.append((time.perf_counter() - start) * 1_000)
            medians[view] = statistics.median(times)
        row = con.execute("SELECT count(*) FROM runs").fetchone()
    return (int(row[0]) if row else 0), medians


def with_million_runs(path: Path) -> Path:
    """A copy of the projection at `path` with one million more runs."""
    bigger = path.with_name("million-runs.duckdb")
    shutil.copy(path, bigger)
    with contextlib.closing(duckdb.connect(str(bigger))) as con:
        con.execute(MILLION_RUNS)
    return bigger


def print_views(path: Path) -> None:
    runs, medians = dashboard(path)
    print(f"dashboard views over {runs:,} runs (median ms of 7):")
    for view, ms in medians.items():
        print(f"  {view:<22} {ms:8.1f}")


# Driver


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-project-") as tmp:
        async with (
            bus.embedded(bus.ServerSettings(), Path(tmp) / "nats") as server,
            bus.connect(bus.Settings(url=server.url), name="bench-ours") as conn,
        ):
            await conn.provision()
            start = time.perf_counter()
            n = await write_log(conn, args.events, args.in_flight)
            print(f"wrote {n:,} messages in {time.perf_counter() - start:.1f} s", flush=True)
            pairs = []
            for i in range(args.rounds):
                ours_first = i % 2 == 0
                if ours_first:
                    ours = await project(conn, Path(tmp) / f"round{i}.duckdb", n, args.max_batch)
                raw = await raw_replay(server.url, n)
                if not ours_first:
                    ours = await project(conn, Path(tmp) / f"round{i}.duckdb", n, args.max_batch)
                pairs.append((ours, raw))
                print(f"round {i + 1}: ours {ours.per_second:,.0f}/s raw {raw.per_second:,.0f}/s", flush=True)
            report(pairs, n, args)
            if args.profile:
                await profiled(conn, Path(tmp) / "profiled.duckdb", args.max_batch)
            if args.million:
                await million(conn, server.url, Path(tmp), args)


def report(pairs: list[tuple[Rate, Rate]], n: int, args: argparse.Namespace) -> None:
    print(f"\n{n:,} messages per side per round; max_batch {args.max_batch}")
    print("cpu = client CPU µs per message (ours: its log-reading child included)")
    print(f"{'round':>5} {'ours/s':>9} {'raw/s':>9} {'ratio':>6} {'cpu ours':>9} {'raw':>6}")
    for i, (ours, raw) in enumerate(pairs, 1):
        ratio = ours.per_second / raw.per_second
        print(
            f"{i:>5} {ours.per_second:>9,.0f} {raw.per_second:>9,.0f} {ratio:>6.2f} "
            f"{ours.cpu_us:>9.1f} {raw.cpu_us:>6.1f}"
        )
    print(f"ours (median): {statistics.median(o.per_second for o, _ in pairs):,.0f} events/s")
    print(f"ratio (median): {statistics.median(o.per_second / r.per_second for o, r in pairs):.2f}")


async def million(conn: bus.Connection, url: str, tmp: Path, args: argparse.Namespace) -> None:
    info = await conn.js.stream_info(conn.settings.stream)
    have = int(info.state.messages)
    if have < 1_000_000:
        start = time.perf_counter()
        total = await write_log(conn, 1_000_000 - have, args.in_flight)
        print(f"\ngrew the log to {total:,} messages in {time.perf_counter() - start:.1f} s", flush=True)
    path = tmp / "million.duckdb"
    for workers in args.workers:
        result = rebuild_in_child(url, path, args.max_batch, workers)
        if "error" in result:
            raise SystemExit(f"rebuild with {workers} worker(s) failed: {result['error']}")
        size_mib = path.stat().st_size / 2**20
        print(
            f"rebuild of {int(result['last_seq']):,} messages, {workers} worker(s): "
            f"{result['seconds']:.1f} s "
            f"({result['last_seq'] / result['seconds']:,.0f}/s), peak RSS {result['peak_rss_mib']:,.0f} MiB "
            f"(largest worker {result['worker_mib']:,.0f} MiB), file {size_mib:,.0f} MiB; CPU "
            f"{result['cpu_s']:.1f} s reading and merging, {result['workers_cpu_s']:.1f} s in workers",
            flush=True,
        )
    print_views(path)
    print_views(with_million_runs(path))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=250_000, help="messages in the log replayed each round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both sides")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help="the projector's batch size")
    parser.add_argument("--in-flight", type=int, default=512, help="runs appended to concurrently")
    parser.add_argument(
        "--million", action="store_true", help="also time a rebuild of 1M messages and the views"
    )
    parser.add_argument("--profile", action="store_true", help="then one projection under cProfile")
    parser.add_argument(
        "--workers", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2],
        help="rebuild worker counts timed with --million (default 1,2)",
    )  # fmt: skip
    parser.add_argument("--rebuild-child", nargs=2, metavar=("URL", "PATH"), help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    arguments = parse_args()
    if arguments.rebuild_child:
        url, target = arguments.rebuild_child
        asyncio.run(child(url, Path(target), arguments.max_batch, arguments.workers[0]))
    else:
        asyncio.run(main(arguments))
