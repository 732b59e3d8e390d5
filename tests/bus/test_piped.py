"""Reading the whole log in a child process: the same records as in process, back-pressure through the
pipe, no consumer or process left behind, and a failing child reported with its reason."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

import bus
from bus._piped import Piped, _program
from tests.bus._messages import append_messages, new_run_id, start_run
from tests.bus._waits import collect, eventually
from tests.bus.test_replay import secured

__all__ = ["secured"]  # the fixture, shared with the in-process reader's tests


async def _in_child(conn: bus.Connection, after_seq: int = 0, max_batch: int = 1_000) -> list[bus.Record]:
    records: list[bus.Record] = []
    async with asyncio.timeout(60):
        async for batch in conn.log.batches(
            after_seq=after_seq, max_batch=max_batch, follow=False, in_child=True
        ):
            records.extend(batch)
    return records


async def test_a_child_reads_the_same_records_as_this_process(conn: bus.Connection) -> None:
    """Every record of the whole log, with its subject, body, digest and time, as the in-process reader
    gives them; in chunks of at most `max_batch`."""
    run_id = new_run_id()
    await conn.log.send(start_run(run_id))
    await append_messages(conn.log, run_id, 40)
    await conn.log.send(start_run())

    here = await collect(conn.log.read())
    chunks = [batch async for batch in conn.log.batches(max_batch=7, follow=False, in_child=True)]

    assert [r.seq for r in here] == list(range(1, 43))
    assert [record for chunk in chunks for record in chunk] == here
    assert all(0 < len(chunk) <= 7 for chunk in chunks)
    assert all(r.digest and r.time and r.time.tzinfo for r in here)


async def test_a_child_reader_at_the_end_of_the_log_ends_at_once(conn: bus.Connection) -> None:
    """An empty log, or a position at its end, reads as nothing; a position inside it reads the rest."""
    assert await _in_child(conn) == []
    await append_messages(conn.log, new_run_id(), 3)
    assert await _in_child(conn, after_seq=3) == []
    assert [r.seq for r in await _in_child(conn, after_seq=1)] == [2, 3]


async def test_a_child_follows_new_records_and_leaves_nothing_behind(conn: bus.Connection) -> None:
    """A follow sees what is appended after it started; closing it ends the child, which deletes its
    consumer itself (well before the server would drop an abandoned one)."""
    await append_messages(conn.log, new_run_id(), 5)
    reader = Piped(conn.settings, 0, most=100, stop_at_end=False)
    await reader.open()
    try:
        seen: list[int] = []
        while len(seen) < 5:
            records, ended = await reader.chunk(100, stop_at_end=False)
            assert not ended
            seen += [r.seq for r in records]
        await append_messages(conn.log, new_run_id(), 4)
        async with asyncio.timeout(10):
            while len(seen) < 9:
                records, _ = await reader.chunk(100, stop_at_end=False)
                seen += [r.seq for r in records]
        process = reader._process
        assert process is not None
        assert os.getsid(process.pid) == process.pid != os.getsid(0)  # out of reach of our Ctrl-C
    finally:
        await reader.close()

    assert seen == list(range(1, 10))
    assert process.returncode == 0

    async def no_consumers() -> bool:
        info = await conn.js.stream_info(conn.settings.stream)
        return info.state.consumer_count == 0

    await eventually(no_consumers, within=3.0)


async def test_a_caller_that_is_behind_gets_the_decoded_chunks_joined(conn: bus.Connection) -> None:
    """Records that arrived one at a time, while the caller was busy, come back joined in order, in whole
    batches of `most`: the child's chunks are decoded ahead until they hold one."""
    reader = Piped(conn.settings, 0, most=10, stop_at_end=False)
    await reader.open()
    try:
        for n in range(30):
            await append_messages(conn.log, new_run_id(), 1)
            if n == 0:
                first, _ = await reader.chunk(10, stop_at_end=False)  # the follow is live
        await asyncio.sleep(1.0)  # the child's single-record chunks queue up meanwhile
        joined, _ = await reader.chunk(10, stop_at_end=False)
        rest: list[bus.Record] = []
        async with asyncio.timeout(10):
            while len(first) + len(joined) + len(rest) < 30:
                chunk, _ = await reader.chunk(10, stop_at_end=False)
                assert len(chunk) <= 10
                rest.extend(chunk)
    finally:
        await reader.close()

    assert len(joined) == 10
    assert [r.seq for r in first + joined + rest] == list(range(1, 31))


async def test_a_slow_caller_of_a_child_reader_loses_nothing(conn: bus.Connection) -> None:
    """150 MB taken slowly: the full pipe holds the child back, flow control holds the server back, and
    every message arrives once, in order."""
    body = b"x" * 150_000
    total = 1_000
    await asyncio.gather(*(conn.js.publish(f"swarm.bulk.cmd.blob.b{i}.put", body) for i in range(total)))
    seqs: list[int] = []

    async with asyncio.timeout(120):
        async for batch in conn.log.batches(follow=False, max_batch=50, in_child=True):
            seqs.extend(record.seq for record in batch)
            assert all(record.data == body for record in batch)
            await asyncio.sleep(0.01)

    assert seqs == list(range(1, total + 1))


async def test_the_last_chunk_reaches_a_caller_that_was_not_reading(conn: bus.Connection) -> None:
    """A child that reaches the end while its pipe is full still delivers everything before it exits:
    the last, small chunk is not dropped with the child's buffers."""
    body = b"z" * 2_000
    total = 3_020  # chunks of 100, the last of 20 (well under the writer's high-water mark)
    await asyncio.gather(*(conn.js.publish(f"swarm.bulk.cmd.blob.b{i}.put", body) for i in range(total)))
    reader = Piped(conn.settings, 0, most=100, stop_at_end=True)
    await reader.open()
    seqs: list[int] = []
    try:
        await asyncio.sleep(2.0)  # the child fills the pipe and buffers the rest, then reaches the end
        async with asyncio.timeout(60):
            ended = False
            while not ended:
                records, ended = await reader.chunk(100, stop_at_end=True)
                seqs.extend(record.seq for record in records)
    finally:
        await reader.close()

    assert seqs == list(range(1, total + 1))


async def test_a_cancelled_follow_ends_its_child(conn: bus.Connection) -> None:
    """Cancelling the task that follows the log in a child stops the child."""
    await append_messages(conn.log, new_run_id(), 3)
    reader = Piped(conn.settings, 0, most=100, stop_at_end=False)
    opened = asyncio.Event()

    async def follow() -> None:
        await reader.open()
        opened.set()
        try:
            while True:
                await reader.chunk(100, stop_at_end=False)
        finally:
            await reader.close()

    task = asyncio.create_task(follow())
    await asyncio.wait_for(opened.wait(), 30)
    process = reader._process
    assert process is not None
    task.cancel()
    await asyncio.wait({task})
    assert process.returncode is not None


async def test_a_killed_child_is_replaced_without_a_gap_or_a_duplicate(conn: bus.Connection) -> None:
    """A child killed mid-follow is replaced by one reading after the last record decoded: the caller
    sees every record once, in order, each time from a new process."""
    await append_messages(conn.log, new_run_id(), 10)
    reader = Piped(conn.settings, 0, most=4, stop_at_end=False)
    await reader.open()
    seen: list[int] = []
    pids: list[int] = []
    try:
        async with asyncio.timeout(30):
            for kill in range(1, 4):
                process = reader._process
                assert process is not None
                pids.append(process.pid)
                process.send_signal(signal.SIGKILL)
                await append_messages(conn.log, new_run_id(), 5)  # only a new child can read these
                while len(seen) < 10 + 5 * kill:
                    records, _ = await reader.chunk(4, stop_at_end=False)
                    assert len(records) <= 4
                    seen += [r.seq for r in records]
            last = reader._process
            assert last is not None
    finally:
        await reader.close()

    assert seen == list(range(1, 26))
    assert len({*pids, last.pid}) == 4


async def test_a_child_that_dies_is_reported_with_its_exit_status(conn: bus.Connection) -> None:
    """With no restarts left (here: none allowed), a dead child ends the reading with its exit status."""
    await append_messages(conn.log, new_run_id(), 3)
    reader = Piped(conn.settings, 0, most=100, stop_at_end=False, restarts=0)
    await reader.open()
    try:
        await reader.chunk(100, stop_at_end=False)
        process = reader._process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        with pytest.raises(bus.BusError, match="exited with status -9"):
            await asyncio.wait_for(_until_it_fails(reader), 10)
    finally:
        await reader.close()


async def _until_it_fails(reader: Piped) -> None:
    while True:
        await reader.chunk(100, stop_at_end=False)


async def test_a_child_that_cannot_connect_says_why(secured: str) -> None:
    """A wrong password comes back from the child as the server's reason."""
    wrong = bus.Settings(url=secured, user="projector", password="wrong", connect_timeout=2.0)
    reader = Piped(wrong, 0, most=100, stop_at_end=True)
    with pytest.raises(bus.BusError, match="Authorization Violation"):
        await reader.open()
    await reader.close()


def test_the_child_starts_without_nats_py_or_aiohttp() -> None:
    """The child loads its reader's modules and not the packages' own, which import nats-py and aiohttp
    (most of its start-up CPU, spent before the first chunk)."""
    check = (
        "import bus._piped\n"
        "print(sorted(m for m in ('nats', 'aiohttp', 'bus._replay') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", _program(check)], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stdout.strip() == "['bus._replay']"
