"""Append throughput: `Log.append` and `Log.send` against a hand-rolled nats-py pipeline, in one run.

Both sides talk to the same embedded nats-server, publish the same bytes (fresh ids, tenant `ours` or
`raw`) with the same headers and keep the same number of acknowledgements in flight; only the client
code differs. Our side encodes, chains and digests inside the timed path; the raw side sends bytes
prepared beforehand, so the ratio charges us for everything `Log` does on top of nats-py. The baseline is
the fastest technique in notes/perf-ceilings.md: core publishes with a reply token and one wildcard inbox
subscription resolving futures. Figures are ratios measured in the same run (the machines are noisy).

    .venv/bin/python bench/append.py [--runs 256] [--events 196] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import msgspec
import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

import bus
from bus.log import EXPECTED_LAST_SUBJECT_SEQ, MSG_ID
from schemas import AgentMessage, Body, IdSource, Kind, StartRun, encode, subjects
from schemas.chain import digest

ACTOR = "exe_bench"
TEXT = "I ran the tests; two failures remain in the parser, fixing the off-by-one now. " * 3


@dataclass(frozen=True, slots=True)
class Prepared:
    """One message as the raw side sends it: encoded, digested, with its message id."""

    data: bytes
    msg_id: str
    sha: str


class _RawAck(msgspec.Struct):
    seq: int = 0
    error: dict[str, object] | None = None


_raw_ack = msgspec.json.Decoder(_RawAck)


class RawPipeline:
    """The baseline: no semaphore, no timeout, no retry; one future per publish, resolved by the inbox."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._inbox = nc.new_inbox()
        self._prefix = f"{self._inbox}."
        self._tokens = count()
        self._waiting: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> None:
        await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        self._waiting.pop(msg.subject[len(self._prefix) :]).set_result(msg.data)

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> int:
        token = str(next(self._tokens))
        future = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
        ack = _raw_ack.decode(await future)
        if ack.error is not None:
            raise RuntimeError(f"raw publish to {subject} failed: {ack.error}")
        return ack.seq


# Workloads: Structs are built outside the timed path; the raw side also gets its bytes pre-encoded.


def events(ids: IdSource, tenant: str, runs: int, per_run: int) -> list[list[AgentMessage]]:
    at = datetime.now(UTC)
    workload = []
    for _ in range(runs):
        run_id = ids.new(Kind.RUN)
        workload.append(
            [
                AgentMessage(
                    id=ids.new(Kind.EVENT),
                    at=at,
                    tenant=tenant,
                    actor=ACTOR,
                    run_id=run_id,
                    item_id=f"item_{i}",
                    text=Body(text=TEXT),
                )
                for i in range(per_run)
            ]
        )
    return workload


def chained(run: list[AgentMessage]) -> list[Prepared]:
    """The exact bytes `Log.append` would send for this run's events, each linked to the one before."""
    prepared, prev = [], None
    for event in run:
        data = encode(msgspec.structs.replace(event, prev_hash=prev))
        prev = digest(data)
        prepared.append(Prepared(data=data, msg_id=event.id, sha=prev))
    return prepared


def commands(ids: IdSource, tenant: str, n: int) -> list[StartRun]:
    at, project_id = datetime.now(UTC), ids.new(Kind.PROJECT)
    return [
        StartRun(
            id=ids.new(Kind.COMMAND),
            at=at,
            tenant=tenant,
            actor=ACTOR,
            run_id=ids.new(Kind.RUN),
            project_id=project_id,
            instructions=TEXT,
        )
        for _ in range(n)
    ]


def prepared_commands(batch: list[StartRun]) -> list[tuple[str, Prepared]]:
    out = []
    for command in batch:
        data = encode(command)
        out.append((subjects.of_command(command), Prepared(data=data, msg_id=command.id, sha=digest(data))))
    return out


# The four timed sides. Client and server share two cores, so the client's CPU per message says which
# side is the bottleneck when the rates alone are noisy.


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    cpu_us: float  # this process's CPU time per message


async def timed(jobs: Sequence[Coroutine[Any, Any, None]], n: int) -> Rate:
    """Run the jobs concurrently. The workload built beforehand is frozen out of the garbage collector's
    view: an executor never holds 50k messages, and scanning them would be charged to whichever side runs
    first."""
    gc.collect()
    gc.freeze()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(job)
        return Rate(n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6)
    finally:
        gc.unfreeze()


async def ours_append(log: bus.Log, workload: list[list[AgentMessage]]) -> Rate:
    async def run(batch: list[AgentMessage]) -> None:
        pos = bus.START
        for event in batch:
            pos = await log.append(event, pos)

    return await timed([run(batch) for batch in workload], sum(map(len, workload)))


async def raw_append(pipe: RawPipeline, workload: list[tuple[str, list[Prepared]]]) -> Rate:
    async def run(subject: str, batch: list[Prepared]) -> None:
        seq = 0
        for msg in batch:
            headers = {MSG_ID: msg.msg_id, EXPECTED_LAST_SUBJECT_SEQ: str(seq), bus.DIGEST: msg.sha}
            seq = await pipe.publish(subject, msg.data, headers)

    return await timed([run(s, b) for s, b in workload], sum(len(b) for _, b in workload))


async def ours_send(log: bus.Log, batch: list[StartRun], senders: int) -> Rate:
    async def sender(share: list[StartRun]) -> None:
        for command in share:
            await log.send(command)

    return await timed([sender(batch[i::senders]) for i in range(senders)], len(batch))


async def raw_send(pipe: RawPipeline, batch: list[tuple[str, Prepared]], senders: int) -> Rate:
    async def sender(share: list[tuple[str, Prepared]]) -> None:
        for subject, msg in share:
            await pipe.publish(subject, msg.data, {MSG_ID: msg.msg_id, bus.DIGEST: msg.sha})

    return await timed([sender(batch[i::senders]) for i in range(senders)], len(batch))


# Rounds


@dataclass(frozen=True, slots=True)
class Pair:
    ours: Rate
    raw: Rate

    @property
    def ratio(self) -> float:
        return self.ours.per_second / self.raw.per_second

    def row(self) -> str:
        o, r = self.ours, self.raw
        rates = f"{o.per_second:>9,.0f} {r.per_second:>9,.0f} {self.ratio:>5.2f}"
        return f"{rates} {o.cpu_us:>8.1f} {r.cpu_us:>6.1f}"


@dataclass(frozen=True, slots=True)
class Round:
    append: Pair
    send: Pair
    published: int


async def both(
    first_ours: bool, ours: Callable[[], Awaitable[Rate]], raw: Callable[[], Awaitable[Rate]]
) -> Pair:
    """Run both sides one after the other, alternating which goes first from round to round."""
    if first_ours:
        mine = await ours()
        return Pair(mine, await raw())
    theirs = await raw()
    return Pair(await ours(), theirs)


async def one_round(
    log: bus.Log,
    pipe: RawPipeline,
    args: argparse.Namespace,
    ids: IdSource,
    first_ours: bool,
    scale: float = 1.0,
) -> Round:
    runs, per_run, n_cmd = max(1, int(args.runs * scale)), args.events, max(1, int(args.commands * scale))
    ours_events = events(ids, "ours", runs, per_run)
    raw_events = [(subjects.of_event(run[0]), chained(run)) for run in events(ids, "raw", runs, per_run)]
    ours_cmds, raw_cmds = commands(ids, "ours", n_cmd), prepared_commands(commands(ids, "raw", n_cmd))
    append = await both(
        first_ours, lambda: ours_append(log, ours_events), lambda: raw_append(pipe, raw_events)
    )
    send = await both(
        first_ours,
        lambda: ours_send(log, ours_cmds, args.senders),
        lambda: raw_send(pipe, raw_cmds, args.senders),
    )
    return Round(append=append, send=send, published=2 * (runs * per_run + n_cmd))


def report(rounds: list[Round], args: argparse.Namespace) -> None:
    print(
        f"\n{args.runs} runs x {args.events} events = {args.runs * args.events} appends per side per round; "
        f"{args.commands} commands from {args.senders} senders; cpu = client CPU us per message"
    )
    side = f"{'ours/s':>9} {'raw/s':>9} {'ratio':>5} {'cpu ours':>8} {'raw':>6}"
    print(f"{'':5} | {'append (expected sequence)':^42} | send (command, no expectation)")
    print(f"{'round':>5} | {side} | {side}")
    for i, r in enumerate(rounds, 1):
        print(f"{i:>5} | {r.append.row()} | {r.send.row()}")
    print(f"send ratio (median): {statistics.median(r.send.ratio for r in rounds):.2f}")
    print(f"append ratio (median): {statistics.median(r.append.ratio for r in rounds):.2f}")


async def check_stored(conn: bus.Connection, expected: int) -> None:
    """Every publish must have been stored once: a silent failure on either side would flatter it."""
    info = await conn.js.stream_info(conn.settings.stream)
    if info.state.messages != expected:
        raise SystemExit(f"stream holds {info.state.messages} messages, expected {expected}")


@contextlib.asynccontextmanager
async def raw_pipeline(url: str) -> AsyncIterator[RawPipeline]:
    nc = await nats.connect(url, name="bench-raw")
    try:
        pipe = RawPipeline(nc)
        await pipe.start()
        yield pipe
    finally:
        await nc.drain()


async def main(args: argparse.Namespace) -> None:
    ids = IdSource()
    with tempfile.TemporaryDirectory(prefix="bench-append-") as tmp:
        async with (
            bus.embedded(bus.ServerSettings(), Path(tmp)) as server,
            bus.connect(bus.Settings(url=server.url), name="bench-ours") as conn,
        ):
            await conn.provision()
            async with raw_pipeline(server.url) as pipe:
                warm_up = await one_round(conn.log, pipe, args, ids, first_ours=True, scale=0.1)
                rounds = [await one_round(conn.log, pipe, args, ids, i % 2 == 0) for i in range(args.rounds)]
            await check_stored(conn, warm_up.published + sum(r.published for r in rounds))
    report(rounds, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=256, help="aggregates appended to concurrently")
    parser.add_argument("--events", type=int, default=196, help="events appended to each run, one at a time")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both sides")
    parser.add_argument(
        "--commands", type=int, default=50_000, help="unconditional command publishes per side"
    )
    parser.add_argument("--senders", type=int, default=1_024, help="concurrent tasks sending commands")
    return parser.parse_args()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main(parse_args()))
