"""Work queues: the handler's outcome decides ack, nak or term; crashes redeliver; shutdown is orderly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.api import ConsumerInfo

import bus
from bus.consume import Handler
from schemas import decode_command, encode, subjects
from schemas.chain import digest
from tests.bus._messages import START_RUNS, new_run_id, start_run
from tests.bus._waits import Check, eventually, holds_for

CRASHING_WORKER = Path(__file__).with_name("_crashing_worker.py")


class Recorder:
    """Remembers every delivery a handler saw and every failure the worker recorded."""

    def __init__(self) -> None:
        self.deliveries: list[bus.Delivery] = []
        self.failures: list[tuple[int, int, str]] = []

    @property
    def attempts(self) -> list[int]:
        return [d.attempt for d in self.deliveries]

    async def on_failure(self, delivery: bus.Delivery, reason: str) -> None:
        self.failures.append((delivery.seq, delivery.attempt, reason))

    def seen(self, count: int) -> Check:
        async def check() -> bool:
            return len(self.deliveries) >= count

        return check

    def failed(self, count: int) -> Check:
        async def check() -> bool:
            return len(self.failures) >= count

        return check


def worker(
    conn: bus.Connection, queue: bus.Queue, handler: Handler, recorder: Recorder, concurrency: int = 4
) -> bus.Worker:
    return bus.Worker(
        conn.js, conn.settings.stream, queue, handler, concurrency=concurrency, on_failure=recorder.on_failure
    )


@contextlib.asynccontextmanager
async def running(work: bus.Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Run a worker for the block; shut it down and wait for it afterwards."""
    task = asyncio.create_task(work.run())
    try:
        yield task
    finally:
        await work.shutdown(grace=5.0)
        async with asyncio.timeout(10):
            await task


async def consumer(conn: bus.Connection, queue: bus.Queue) -> ConsumerInfo:
    info: ConsumerInfo = await conn.js.consumer_info(conn.settings.stream, queue.durable)
    return info


def acked_through(info: ConsumerInfo) -> int:
    return info.ack_floor.stream_seq if info.ack_floor else 0


def settled(conn: bus.Connection, queue: bus.Queue, through_seq: int) -> Check:
    """Everything up to `through_seq` was delivered and acknowledged (acked or terminated)."""

    async def check() -> bool:
        info = await consumer(conn, queue)
        idle = info.num_pending == 0 and info.num_ack_pending == 0
        return idle and acked_through(info) >= through_seq

    return check


async def test_successful_work_is_acked_once(conn: bus.Connection) -> None:
    """A handler that returns acks its message: called once, nothing pending or redelivered afterwards."""
    queue = bus.Queue(durable="executors", subject=START_RUNS, ack_wait=2.0)
    command = start_run()
    ack = await conn.log.send(command)
    recorder = Recorder()

    async def handle(delivery: bus.Delivery) -> None:
        recorder.deliveries.append(delivery)

    async with running(worker(conn, queue, handle, recorder)):
        await eventually(recorder.seen(1))
        await eventually(settled(conn, queue, ack.seq))

    [delivery] = recorder.deliveries
    data = encode(command)
    assert (delivery.seq, delivery.attempt, delivery.subject) == (ack.seq, 1, subjects.of_command(command))
    assert (delivery.data, delivery.digest) == (data, digest(data))
    info = await consumer(conn, queue)
    assert info.num_redelivered == 0
    assert recorder.failures == []


async def test_work_of_a_killed_worker_is_delivered_again(conn: bus.Connection) -> None:
    """A worker process killed before acking loses nothing: the next worker gets the message, attempt 2."""
    queue = bus.Queue(durable="executors", subject=START_RUNS, ack_wait=2.0)
    ack = await conn.log.send(start_run())
    args = [conn.settings.url, queue.durable, queue.subject, str(queue.ack_wait)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(CRASHING_WORKER), *args, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert await ready_line(process) == f"READY {ack.seq} 1"
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL

    recorder = Recorder()

    async def handle(delivery: bus.Delivery) -> None:
        recorder.deliveries.append(delivery)

    async with running(worker(conn, queue, handle, recorder)):
        await eventually(recorder.seen(1), within=15.0)
        await eventually(settled(conn, queue, ack.seq))

    assert [(d.seq, d.attempt) for d in recorder.deliveries] == [(ack.seq, 2)]


async def ready_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(20):
        while line := (await process.stdout.readline()).decode():
            if line.startswith("READY"):
                return line.strip()
    pytest.fail(f"the crashing worker exited ({await process.wait()}) before taking the message")


async def test_reject_terminates_and_records_the_failure_once(conn: bus.Connection) -> None:
    """`Reject` terms the message and calls `on_failure` once; it is not delivered again."""
    queue = bus.Queue(durable="executors", subject=START_RUNS, ack_wait=1.0)
    ack = await conn.log.send(start_run())
    recorder = Recorder()

    async def handle(delivery: bus.Delivery) -> None:
        recorder.deliveries.append(delivery)
        raise bus.Reject("no such project")

    async def quiet() -> bool:
        info = await consumer(conn, queue)
        return len(recorder.deliveries) == 1 and info.num_redelivered == 0 and info.num_ack_pending == 0

    async with running(worker(conn, queue, handle, recorder)):
        await eventually(recorder.failed(1))
        await eventually(settled(conn, queue, ack.seq))
        await holds_for(quiet, queue.ack_wait * 1.5)

    assert recorder.failures == [(ack.seq, 1, "no such project")]


async def test_undecodable_messages_are_rejected(conn: bus.Connection) -> None:
    """A message whose decoding raises `InvalidMessage` is terminated and recorded, never retried."""
    queue = bus.Queue(durable="executors", subject=START_RUNS, ack_wait=1.0)
    subject = subjects.commands("acme", "run", new_run_id(), "start")
    bad = [b"{not json", b'{"type":"run.start"}', b'{"type":"run.launch"}']
    acks = [await conn.js.publish(subject, data) for data in bad]
    recorder = Recorder()

    async def handle(delivery: bus.Delivery) -> None:
        recorder.deliveries.append(delivery)
        decode_command(delivery.data)

    async def quiet() -> bool:
        info = await consumer(conn, queue)
        return len(recorder.deliveries) == 3 and info.num_redelivered == 0 and info.num_ack_pending == 0

    async with running(worker(conn, queue, handle, recorder)):
        await eventually(recorder.failed(3))
        await eventually(settled(conn, queue, acks[-1].seq))
        await holds_for(quiet, queue.ack_wait * 1.5)

    failures = sorted(recorder.failures)
    assert [(seq, attempt) for seq, attempt, _ in failures] == [(a.seq, 1) for a in acks]
    assert "not valid JSON" in failures[0][2]
    assert "missing required field" in failures[1][2].lower()
    assert "unknown message type 'run.launch'" in failures[2][2]


async def test_retry_naks_and_the_message_comes_back(conn: bus.Connection) -> None:
    """`Retry(delay)` naks: the message returns as attempt 2 after about `delay`, long before ack_wait."""
    queue = bus.Queue(durable="executors", subject=START_RUNS, ack_wait=30.0)
    ack = await conn.log.send(start_run())
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def handle(delivery: bus.Delivery) -> None:
        recorder.deliveries.append(delivery)
        times.append(loop.time())
        if delivery.attempt == 1:
            raise bus.Retry("the sandbox is busy", delay=0.5)

    async with running(worker(conn, queue, handle, recorder)):
        await eventually(recorder.seen(2))
        await eventually(settled(conn, queue, ack.seq))

    assert [(d.seq, d.attempt) for d in recorder.deliveries] == [(ack.seq, 1), (ack.seq, 2)]
    assert times[1] - times[0] >= 0.4
    assert recorder.failures == []


async def test_retry_gives_up_after_max_deliver(conn: bus.Connection) -> None:
    """A message retried on every attempt is terminated at `max_deliver` and recorded as given up."""
    queue = bus.Queue(durable="executors", subject=START_RUNS, ack_wait=30.0, max_deliver=3)
    ack = await conn.log.send(start_run())
    recorder = Recorder()

    async def handle(delivery: bus.Delivery) -> None:
        recorder.deliveries.append(delivery)
        raise bus.Retry("the sandbox is busy", delay=0.1)

    async def no_fourth_attempt() -> bool:
        return len(recorder.deliveries) == 3

    async with running(worker(conn, queue, handle, recorder)):
        await eventually(recorder.failed(1))
        await eventually(settled(conn, queue, ack.seq))
        await holds_for(no_fourth_attempt, 0.5)

    assert recorder.attempts == [1, 2, 3]
    assert recorder.failures == [(ack.seq, 3, "gave up after 3 attempts: the sandbox is busy")]


async def test_unexpected_errors_are_retried_with_backoff_then_given_up(conn: bus.Connection) -> None:
    """An exception that is neither Retry nor Reject is retried after the backoff, then given up."""
    queue = bus.Queue(durable="executors", subject=START_RUNS, ack_wait=30.0, max_deliver=2, backoff=(0.2,))
    ack = await conn.log.send(start_run())
    recorder = Recorder()

    async def handle(delivery: bus.Delivery) -> None:
        recorder.deliveries.append(delivery)
        raise RuntimeError("boom")

    async with running(worker(conn, queue, handle, recorder)):
        await eventually(recorder.failed(1))
        await eventually(settled(conn, queue, ack.seq))

    assert recorder.attempts == [1, 2]
    assert recorder.failures == [(ack.seq, 2, "gave up after 2 attempts: RuntimeError('boom')")]


async def test_heartbeats_keep_long_work_from_being_redelivered(conn: bus.Connection) -> None:
    """A handler running longer than `ack_wait` keeps its message through `in_progress` heartbeats."""
    queue = bus.Queue(durable="executors", subject=START_RUNS, ack_wait=1.5)
    ack = await conn.log.send(start_run())
    recorder = Recorder()
    finished = asyncio.Event()

    async def handle(delivery: bus.Delivery) -> None:
        recorder.deliveries.append(delivery)
        await asyncio.sleep(4.0)  # the work itself: longer than ack_wait
        finished.set()

    async with running(worker(conn, queue, handle, recorder, concurrency=2)):
        async with asyncio.timeout(10):
            await finished.wait()
        await eventually(settled(conn, queue, ack.seq))

    assert [(d.seq, d.attempt) for d in recorder.deliveries] == [(ack.seq, 1)]
    assert (await consumer(conn, queue)).num_redelivered == 0


async def test_concurrency_bounds_handlers_running_at_once(conn: bus.Connection) -> None:
    """No more than `concurrency` handlers run at once, and with enough work that many do."""
    queue = bus.Queue(durable="executors", subject=START_RUNS, ack_wait=10.0)
    acks = [await conn.log.send(start_run()) for _ in range(10)]
    recorder = Recorder()
    running_now = peak = 0

    async def handle(delivery: bus.Delivery) -> None:
        nonlocal running_now, peak
        recorder.deliveries.append(delivery)
        running_now += 1
        peak = max(peak, running_now)
        await asyncio.sleep(0.05)  # the work itself
        running_now -= 1

    async with running(worker(conn, queue, handle, recorder, concurrency=3)):
        await eventually(recorder.seen(10))
        await eventually(settled(conn, queue, acks[-1].seq))

    assert peak == 3
    assert sorted(d.seq for d in recorder.deliveries) == [a.seq for a in acks]


async def test_shutdown_stops_fetching_and_lets_work_in_flight_finish(conn: bus.Connection) -> None:
    """After `shutdown()` no new message is taken, and the handlers already running finish and are acked."""
    queue = bus.Queue(durable="executors", subject=START_RUNS, ack_wait=30.0)
    acks = [await conn.log.send(start_run()) for _ in range(2)]
    recorder = Recorder()
    release = asyncio.Event()

    async def handle(delivery: bus.Delivery) -> None:
        recorder.deliveries.append(delivery)
        await release.wait()

    work = worker(conn, queue, handle, recorder, concurrency=2)
    run = asyncio.create_task(work.run())
    try:
        await eventually(recorder.seen(2))
        stopping = asyncio.create_task(work.shutdown(grace=10.0))
        late = await conn.log.send(start_run())

        async def still_running() -> bool:
            return not stopping.done() and not run.done()

        await holds_for(still_running, 0.3)
        release.set()
        async with asyncio.timeout(10):
            await stopping
            await run
    finally:
        release.set()
        run.cancel()

    async def in_flight_acked() -> bool:
        info = await consumer(conn, queue)
        return acked_through(info) == acks[-1].seq and info.num_ack_pending == 0

    await eventually(in_flight_acked)
    assert sorted(d.seq for d in recorder.deliveries) == [a.seq for a in acks]
    info = await consumer(conn, queue)
    assert info.delivered is not None
    assert (info.num_pending, info.delivered.stream_seq) == (1, acks[-1].seq)
    assert late.seq > acks[-1].seq


async def test_work_outliving_the_shutdown_grace_is_handed_back(conn: bus.Connection) -> None:
    """A handler still running when the grace ends is cancelled and its message naked for another worker."""
    queue = bus.Queue(durable="executors", subject=START_RUNS, ack_wait=30.0)
    ack = await conn.log.send(start_run())
    first, second = Recorder(), Recorder()

    async def hang(delivery: bus.Delivery) -> None:
        first.deliveries.append(delivery)
        await asyncio.Event().wait()

    async def handle(delivery: bus.Delivery) -> None:
        second.deliveries.append(delivery)

    stuck = worker(conn, queue, hang, first)
    run = asyncio.create_task(stuck.run())
    await eventually(first.seen(1))
    await stuck.shutdown(grace=0.2)
    async with asyncio.timeout(5):
        await run

    async with running(worker(conn, queue, handle, second)):
        await eventually(second.seen(1), within=5.0)  # far sooner than ack_wait: the message was naked
        await eventually(settled(conn, queue, ack.seq))

    # Attempt 2, or 3 when the stuck worker's last fetch caught the naked message and handed it back too.
    [delivery] = second.deliveries
    assert delivery.seq == ack.seq
    assert delivery.attempt in (2, 3)


def test_a_queue_refuses_unbounded_redelivery() -> None:
    """`max_deliver` must be a bound: JetStream's -1 (unlimited) would make every retry terminal here."""
    with pytest.raises(ValueError, match="max_deliver"):
        bus.Queue(durable="work", subject="swarm.*.cmd.>", max_deliver=-1)
