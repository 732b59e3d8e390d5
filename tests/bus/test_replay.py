"""Reading the whole log over its own connection: in order, exactly once, through restarts, consumer
loss, a slow reader and the production permissions."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import bus
from bus._replay import Replay
from bus.server import free_port
from tests.bus._messages import append_messages, new_run_id, start_run
from tests.bus._waits import collect, eventually

NATS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "nats"


async def test_the_whole_log_reads_every_record_with_its_digest_and_time(conn: bus.Connection) -> None:
    """`read()` of the whole log gives every message of every subject once, in order, as stored."""
    run_id = new_run_id()
    await conn.log.send(start_run(run_id))
    await append_messages(conn.log, run_id, 30)
    await conn.log.send(start_run())

    records = await collect(conn.log.read())
    stored = [await conn.log.get(seq) for seq in range(1, 33)]

    assert [r.seq for r in records] == list(range(1, 33))
    assert [(r.subject, r.data, r.digest) for r in records] == [
        (s.subject, s.data, s.digest) for s in stored if s is not None
    ]
    assert all(r.digest and r.time and r.time.tzinfo for r in records)


async def test_reading_the_whole_log_after_its_end_ends_at_once(conn: bus.Connection) -> None:
    """An empty log, or a position at its end, reads as nothing without waiting."""
    assert await collect(conn.log.read(), within=5.0) == []
    await append_messages(conn.log, new_run_id(), 3)
    assert await collect(conn.log.read(after_seq=3), within=5.0) == []
    assert [r.seq for r in await collect(conn.log.read(after_seq=1), within=5.0)] == [2, 3]


async def test_whole_log_readers_leave_no_consumer_behind(conn: bus.Connection) -> None:
    """Fifty reads of the whole log, some abandoned half-way, leave no consumer on the server."""
    await append_messages(conn.log, new_run_id(), 20)
    for n in range(50):
        async for record in conn.log.read():
            if record.seq == n % 20 + 1:
                break

    async def no_consumers() -> bool:
        info = await conn.js.stream_info(conn.settings.stream)
        return info.state.consumer_count == 0

    await eventually(no_consumers, within=5.0)


async def test_a_slow_whole_log_reader_of_more_than_its_buffer_loses_nothing(conn: bus.Connection) -> None:
    """Taking 150 MB slowly (its buffer holds 64 MiB) still yields every message once: flow control and
    a paused socket pace the server by what the reader has taken."""
    body = b"x" * 150_000
    total = 1_000
    await asyncio.gather(*(conn.js.publish(f"swarm.bulk.cmd.blob.b{i}.put", body) for i in range(total)))
    seqs: list[int] = []

    async with asyncio.timeout(120):
        async for batch in conn.log.batches(follow=False, max_batch=50):
            seqs.extend(record.seq for record in batch)
            assert all(record.data == body for record in batch)
            await asyncio.sleep(0.01)

    assert seqs == list(range(1, total + 1))


async def test_a_deleted_consumer_is_recreated_from_the_last_record_taken(conn: bus.Connection) -> None:
    """When the server loses the reader's consumer, heartbeats stop and the reader carries on from the
    record after the last one it handed out: nothing missed, nothing twice."""
    run_id = new_run_id()
    await append_messages(conn.log, run_id, 10)
    replay = Replay(conn.settings, 0, heartbeat=0.2)
    await replay.open()
    try:
        first, _ = await replay.chunk(4, stop_at_end=False)
        for consumer in await conn.js.consumers_info(conn.settings.stream):
            await conn.js.delete_consumer(conn.settings.stream, consumer.name)
        await append_messages(conn.log, new_run_id(), 5)
        rest: list[bus.Record] = []
        async with asyncio.timeout(10):
            while len(first) + len(rest) < 15:
                chunk, _ = await replay.chunk(100, stop_at_end=False)
                rest.extend(chunk)
    finally:
        await replay.close()

    assert [r.seq for r in first + rest] == list(range(1, 16))


async def test_a_follow_of_the_whole_log_survives_a_server_restart(
    server_settings: bus.ServerSettings, tmp_path: Path
) -> None:
    """A follower keeps reading across a restart of the server: every message once, in order."""
    settings = bus.ServerSettings(binary=server_settings.binary, port=free_port("127.0.0.1"))
    data_dir = tmp_path / "nats"
    seen: list[int] = []

    async def follow(url: str) -> None:
        async with bus.connect(bus.Settings(url=url), name="follower") as reader:
            async for record in reader.log.follow():
                seen.append(record.seq)  # noqa: PERF401 - watched while the follow goes on

    async with bus.embedded(settings, data_dir) as server, bus.connect(bus.Settings(url=server.url)) as conn:
        await conn.provision()
        await append_messages(conn.log, new_run_id(), 20)
        follower = asyncio.create_task(follow(server.url))
        await eventually(lambda: _holds(len(seen) == 20))
    try:
        async with bus.embedded(settings, data_dir) as up, bus.connect(bus.Settings(url=up.url)) as conn:
            await append_messages(conn.log, new_run_id(), 20)
            await eventually(lambda: _holds(len(seen) >= 40), within=20.0)
    finally:
        follower.cancel()
        await asyncio.wait({follower})

    assert seen == list(range(1, 41))


async def _holds(value: bool) -> bool:
    return value


@pytest.fixture
async def secured(server_settings: bus.ServerSettings, tmp_path: Path) -> AsyncIterator[str]:
    """A nats-server with deploy/nats/accounts.conf (every role's user and permissions); its URL."""
    assert server_settings.binary is not None
    port = free_port("127.0.0.1")
    shutil.copy(NATS_DIR / "accounts.conf", tmp_path / "accounts.conf")
    (tmp_path / "server.conf").write_text(
        f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{tmp_path / "js"}" }}\ninclude accounts.conf\n'
    )
    env = {**os.environ} | {f"{role}_PASSWORD": f"pw-{role.lower()}" for role in _ROLES}
    process = subprocess.Popen(  # noqa: ASYNC220 - stopped in this fixture's teardown
        [server_settings.binary, "-c", str(tmp_path / "server.conf")], env=env, cwd=tmp_path
    )
    try:
        url = f"nats://127.0.0.1:{port}"
        await eventually(lambda: _connects(url), within=20.0)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


_ROLES = ("GATEWAY", "EXECUTOR", "PROJECTOR", "ADMIN", "SYSTEM")


async def _connects(url: str) -> bool:
    try:
        async with bus.connect(bus.Settings(url=url, user="admin", password="pw-admin", connect_timeout=1.0)):
            return True
    except bus.Unreachable:
        return False


async def test_the_projector_user_reads_the_whole_log_under_its_permissions(secured: str) -> None:
    """With the production accounts, the projector's user reads a log larger than one flow-control
    window; a wrong password is refused with the server's reason."""
    admin = bus.Settings(url=secured, user="admin", password="pw-admin")
    async with bus.connect(admin) as conn:
        await conn.provision()
        body = b"y" * 60_000
        await asyncio.gather(*(conn.js.publish(f"swarm.t.cmd.blob.b{i}.put", body) for i in range(300)))
    projector = bus.Settings(url=secured, user="projector", password="pw-projector")
    async with bus.connect(projector) as conn:
        records = await collect(conn.log.read(), within=30.0)
    assert [r.seq for r in records] == list(range(1, 301))

    wrong = bus.Settings(url=secured, user="projector", password="wrong", connect_timeout=2.0)
    replay = Replay(wrong, 0)
    with pytest.raises(bus.BusError, match="Authorization Violation"):
        await replay.open()
    await replay.close()
