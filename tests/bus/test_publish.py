"""Publishing to the log: dedupe by message id, optimistic concurrency, the hash chain, size limits."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

import bus
from schemas import AgentMessage, Body, decode_event, encode, subjects
from schemas.chain import digest, verify
from tests.bus._messages import (
    TENANT,
    agent_message,
    append_messages,
    new_run_id,
    run_started,
    run_subject,
    start_run,
)
from tests.bus._waits import collect


async def stream_messages(conn: bus.Connection) -> int:
    info = await conn.js.stream_info(conn.settings.stream)
    return info.state.messages


async def test_same_command_sent_twice_is_stored_once(conn: bus.Connection) -> None:
    """A command sent again with the same message id is acknowledged as a duplicate of the first."""
    command = start_run()

    first = await conn.log.send(command)
    second = await conn.log.send(command)

    assert not first.duplicate
    assert second.duplicate
    assert second.seq == first.seq
    stored = await collect(conn.log.read(subjects.tenant_log(TENANT)))
    assert [(r.seq, r.data) for r in stored] == [(first.seq, encode(command))]


async def test_same_idempotency_key_on_two_commands_is_stored_once(conn: bus.Connection) -> None:
    """Two different commands sharing an idempotency key are one request: only the first is stored."""
    run_id = new_run_id()
    first_command, second_command = start_run(run_id), start_run(run_id, instructions="something else")

    first = await conn.log.send(first_command, idempotency_key="client-key-1")
    second = await conn.log.send(second_command, idempotency_key="client-key-1")

    assert (second.seq, second.duplicate) == (first.seq, True)
    stored = await collect(conn.log.read(subjects.tenant_log(TENANT)))
    assert [r.data for r in stored] == [encode(first_command)]


async def test_two_writers_at_the_same_position_one_wins_one_conflicts(
    conn: bus.Connection, bus_settings: bus.Settings
) -> None:
    """Two appends expecting the same position: exactly one is stored, the other gets a typed conflict."""
    run_id = new_run_id()
    await conn.log.send(start_run(run_id))  # so stream and subject sequences differ
    at = await conn.log.append(run_started(run_id), bus.START)
    contenders = [agent_message(run_id, "writer A"), agent_message(run_id, "writer B")]

    async with bus.connect(bus_settings, name="second-writer") as other:
        outcomes = await asyncio.gather(
            conn.log.append(contenders[0], at), other.log.append(contenders[1], at), return_exceptions=True
        )

    wins = [o for o in outcomes if isinstance(o, bus.Position)]
    conflicts = [o for o in outcomes if isinstance(o, bus.ConcurrencyConflict)]
    assert (len(wins), len(conflicts)) == (1, 1), outcomes
    assert conflicts[0].subject == run_subject(run_id)
    assert conflicts[0].expected == at.seq
    assert conflicts[0].actual == wins[0].seq
    stored = await collect(conn.log.read(run_subject(run_id)))
    assert [r.seq for r in stored] == [at.seq, wins[0].seq]
    winner = decode_event(stored[1].data)
    assert isinstance(winner, AgentMessage)
    assert winner.id == contenders[outcomes.index(wins[0])].id


async def test_append_links_each_event_to_the_previous_one(conn: bus.Connection) -> None:
    """`append` sets `prev_hash` to the digest of the previous event and records each event's digest."""
    run_id = new_run_id()
    first = await conn.log.append(run_started(run_id), bus.START)
    second = await conn.log.append(agent_message(run_id), first)

    records = await collect(conn.log.read(run_subject(run_id)))

    assert [r.seq for r in records] == [first.seq, second.seq]
    for record, position in zip(records, (first, second), strict=True):
        assert record.digest == digest(record.data) == position.digest
    assert decode_event(records[0].data).prev_hash is None
    assert decode_event(records[1].data).prev_hash == digest(records[0].data)
    report = verify(r.entry() for r in records)
    assert report.ok, report.first_break
    assert report.heads == {run_subject(run_id): second.digest}


async def test_a_changed_byte_breaks_the_chain(conn: bus.Connection) -> None:
    """The chain written by `append` is what the verifier checks: altering an event is detected."""
    run_id = new_run_id()
    await append_messages(conn.log, run_id, 3)
    records = await collect(conn.log.read(run_subject(run_id)))
    tampered = records[1].data.replace(b"message 1", b"message X")

    entries = [r.entry() for r in records]
    entries[1] = msgspec.structs.replace(entries[1], data=tampered, recorded_digest=digest(tampered))
    report = verify(entries)

    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.problem) == (records[2].seq, "chain_broken")


async def test_retried_append_returns_the_original_position(conn: bus.Connection) -> None:
    """Appending an already stored event again (same id, same expected position) is not a conflict."""
    run_id = new_run_id()
    event = run_started(run_id)
    first = await conn.log.append(event, bus.START)

    again = await conn.log.append(event, bus.START)

    assert again == first
    assert await stream_messages(conn) == 1


async def test_retried_append_after_someone_appended_is_a_conflict(conn: bus.Connection) -> None:
    """A stale retry whose event is no longer the subject's last reports the conflict, storing nothing."""
    run_id = new_run_id()
    event = run_started(run_id)
    first = await conn.log.append(event, bus.START)
    second = await conn.log.append(agent_message(run_id), first)

    with pytest.raises(bus.ConcurrencyConflict) as conflict:
        await conn.log.append(event, bus.START)

    assert (conflict.value.expected, conflict.value.actual) == (0, second.seq)
    assert await stream_messages(conn) == 2


async def test_message_over_the_limit_is_refused_before_sending(conn: bus.Connection) -> None:
    """A message over `max_message_bytes` raises `PayloadTooLarge` and nothing is stored."""
    run_id = new_run_id()
    limit = conn.settings.max_message_bytes

    with pytest.raises(bus.PayloadTooLarge) as too_large:
        await conn.log.append(agent_message(run_id, "x" * limit), bus.START)

    assert too_large.value.limit == limit
    assert too_large.value.size > limit
    assert await conn.log.position(run_subject(run_id)) == bus.START
    assert await stream_messages(conn) == 0


def header_bytes(event_id: str) -> int:
    """The NATS header block of an append at `START`, which the stream counts with the body."""
    headers = {"Nats-Msg-Id": event_id, "Nats-Expected-Last-Subject-Sequence": "0", "Swarm-Sha256": "0" * 64}
    return len(b"NATS/1.0\r\n\r\n") + sum(len(k) + len(v) + len(": \r\n") for k, v in headers.items())


@pytest.mark.parametrize("over", [-1, 0, 1])
async def test_the_limit_counts_headers_and_body(conn: bus.Connection, over: int) -> None:
    """A message of exactly `max_message_bytes` (body plus headers, as the stream counts) is stored, one
    byte more raises `PayloadTooLarge`; the server never refuses it with a generic `PublishFailed`."""
    limit = conn.settings.max_message_bytes
    one = agent_message(new_run_id(), "x")
    filler = limit + over - (len(encode(one)) - 1) - header_bytes(one.id)
    event = msgspec.structs.replace(one, text=Body(text="x" * filler))
    assert len(encode(event)) + header_bytes(event.id) == limit + over

    if over > 0:
        with pytest.raises(bus.PayloadTooLarge):
            await conn.log.append(event, bus.START)
        assert await stream_messages(conn) == 0
    else:
        position = await conn.log.append(event, bus.START)
        assert position.seq == 1


async def test_publish_without_a_stream_fails_fast(bus_settings: bus.Settings) -> None:
    """Sending to a subject no stream covers raises `PublishFailed` at once (no responders), not a hang."""
    async with bus.connect(bus_settings, name="unprovisioned") as conn:
        async with asyncio.timeout(bus_settings.publish_timeout / 2):
            with pytest.raises(bus.PublishFailed) as failed:
                await conn.log.send(start_run())

    assert not isinstance(failed.value, bus.ConcurrencyConflict)
    assert "no stream" in failed.value.detail
