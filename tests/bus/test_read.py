"""Reading the log: one aggregate in order, paging, following live, positions, long reads."""

from __future__ import annotations

import asyncio
import contextlib

import bus
from schemas import decode_event, encode, subjects
from schemas.chain import digest
from tests.bus._messages import (
    TENANT,
    agent_message,
    append_messages,
    new_run_id,
    run_started,
    run_subject,
    start_run,
)
from tests.bus._waits import collect, eventually


async def test_read_returns_one_aggregates_events_in_order(conn: bus.Connection) -> None:
    """`read(subject)` yields exactly that aggregate's events, in the order they were appended."""
    mine, other = new_run_id(), new_run_id()
    at_mine, at_other = bus.START, bus.START
    appended = []
    for n in range(5):
        event = agent_message(mine, f"mine {n}")
        appended.append(event)
        at_mine = await conn.log.append(event, at_mine)
        at_other = await conn.log.append(agent_message(other, f"other {n}"), at_other)

    records = await collect(conn.log.read(run_subject(mine)))

    assert [decode_event(r.data).id for r in records] == [e.id for e in appended]
    assert [r.seq for r in records] == [1, 3, 5, 7, 9]
    assert {r.subject for r in records} == {run_subject(mine)}


async def test_pages_of_ten_cover_every_record_once(conn: bus.Connection) -> None:
    """Paging with `after_seq` and `limit` yields each of 25 records exactly once, then an empty page."""
    run_id = new_run_id()
    await conn.log.send(start_run())  # another subject first, so stream and page positions differ
    await append_messages(conn.log, run_id, 25)
    pages: list[list[int]] = []
    after = 0

    while True:
        page = await collect(conn.log.read(run_subject(run_id), after_seq=after, limit=10))
        if not page:
            break
        pages.append([r.seq for r in page])
        after = page[-1].seq

    assert [len(p) for p in pages] == [10, 10, 5]
    assert [seq for page in pages for seq in page] == list(range(2, 27))


async def test_reading_an_empty_subject_ends_at_once(conn: bus.Connection) -> None:
    """A subject without messages reads as empty at once, even while other subjects have messages."""
    await append_messages(conn.log, new_run_id(), 3)

    assert await collect(conn.log.read(run_subject(new_run_id())), within=2.0) == []
    assert await collect(conn.log.read(">", after_seq=3), within=2.0) == []


async def test_read_with_a_limit_of_zero_reads_nothing(conn: bus.Connection) -> None:
    """`limit=0` is an empty page, not an unlimited one."""
    await append_messages(conn.log, new_run_id(), 3)

    assert await collect(conn.log.read(limit=0), within=2.0) == []


async def test_follow_yields_history_then_live_events_without_gap_or_duplicate(conn: bus.Connection) -> None:
    """`follow` yields what was there, then every message appended after it started, each once."""
    run_id = new_run_id()
    at = await append_messages(conn.log, run_id, 3)
    seen: list[bus.Record] = []

    async def follow() -> None:
        async for record in conn.log.follow(run_subject(run_id)):
            seen.append(record)  # noqa: PERF401 - the test watches the list grow live

    async def seen_count(n: int) -> bool:
        return len(seen) >= n

    follower = asyncio.create_task(follow())
    try:
        await eventually(lambda: seen_count(3))
        at = await append_messages(conn.log, run_id, 3, at)
        await eventually(lambda: seen_count(6))
        await conn.log.append(agent_message(run_id, "last"), at)
        await eventually(lambda: seen_count(7))
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower

    assert [r.seq for r in seen] == list(range(1, 8))
    assert [r.data for r in seen] == [r.data for r in await collect(conn.log.read(run_subject(run_id)))]


async def test_follow_started_during_appends_misses_nothing(conn: bus.Connection) -> None:
    """A follower that starts while a writer is appending sees every message once, in order."""
    total = 300
    writer_done = asyncio.Event()
    seen: list[int] = []

    async def write() -> None:
        at = bus.START
        run_id = new_run_id()
        for n in range(total):
            at = await conn.log.append(agent_message(run_id, f"n{n}"), at)
        writer_done.set()

    async def follow() -> None:
        async for record in conn.log.follow(subjects.tenant_log(TENANT)):
            seen.append(record.seq)  # noqa: PERF401 - the test watches the list grow live

    async def all_seen() -> bool:
        return len(seen) >= total

    async with asyncio.TaskGroup() as group:
        writer = group.create_task(write())
        await eventually(lambda: stream_has(conn, total // 3))
        follower = group.create_task(follow())
        await writer
        await eventually(all_seen)
        follower.cancel()

    assert writer_done.is_set()
    assert seen == list(range(1, total + 1))


async def stream_has(conn: bus.Connection, count: int) -> bool:
    info = await conn.js.stream_info(conn.settings.stream)
    return info.state.messages >= count


async def test_position_is_start_then_the_last_event(conn: bus.Connection) -> None:
    """`position` of an empty subject is `START`; after appends it is the last event's seq and digest."""
    run_id = new_run_id()
    assert await conn.log.position(run_subject(run_id)) == bus.START

    await conn.log.append(run_started(run_id), bus.START)
    await conn.log.send(start_run())
    at = await append_messages(conn.log, run_id, 2, await conn.log.position(run_subject(run_id)))

    position = await conn.log.position(run_subject(run_id))
    last = (await collect(conn.log.read(run_subject(run_id))))[-1]
    assert position == at
    assert (position.seq, position.digest) == (last.seq, digest(last.data))
    assert position.seq == 4


async def test_a_long_read_yields_every_message_in_order(conn: bus.Connection) -> None:
    """Reading 5,000 messages of one subject yields exactly 5,000, in stream order, each once."""
    total = 5_000
    run_id = new_run_id()
    commands = [start_run(run_id) for _ in range(total)]
    acks = await asyncio.gather(*(conn.log.send(command) for command in commands))
    subject = subjects.of_command(commands[0])

    records = await collect(conn.log.read(subject), within=30.0)

    assert len(records) == total
    assert [r.seq for r in records] == sorted(a.seq for a in acks) == list(range(1, total + 1))
    by_seq = {ack.seq: encode(command) for ack, command in zip(acks, commands, strict=True)}
    assert all(r.data == by_seq[r.seq] for r in records)


async def test_a_slow_reader_of_a_long_log_still_gets_everything(conn: bus.Connection) -> None:
    """A reader that pauses now and then (so the server gets ahead of it) still gets every message once."""
    total = 5_000
    run_id = new_run_id()
    await asyncio.gather(*(conn.log.send(start_run(run_id)) for _ in range(total)))
    seqs: list[int] = []

    async with asyncio.timeout(30):
        async for record in conn.log.read():
            seqs.append(record.seq)
            if record.seq % 1_000 == 0:
                await asyncio.sleep(0.2)  # a slow consumer: lets the server's deliveries pile up

    assert seqs == list(range(1, total + 1))


async def test_a_slow_reader_of_more_than_the_client_buffer_loses_nothing(conn: bus.Connection) -> None:
    """Reading more bytes than the client's pending-byte limit, slowly, still yields every message once.

    Flow control must pace the server by what the reader has taken, not by what reached the socket;
    otherwise the client's buffer overflows and drops messages that the ordered consumer never misses.
    """
    body = b"x" * 150_000
    total = 1_000  # 150 MB: far over the 64 MiB the client buffers
    await asyncio.gather(*(conn.js.publish(f"swarm.bulk.cmd.blob.b{i}.put", body) for i in range(total)))
    seqs: list[int] = []

    async with asyncio.timeout(120):
        async for batch in conn.log.batches("bulk.>", follow=False, max_batch=50):
            seqs.extend(record.seq for record in batch)
            await asyncio.sleep(0.01)  # a slow consumer: the server gets far ahead unless paced

    assert seqs == list(range(1, total + 1))
