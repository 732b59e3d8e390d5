"""A projector follows the real log to its end, answers `wait_for`, and survives SIGKILL mid-batch."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import bus
from projectors.projector import Projector
from projectors.rebuild import compare, rebuild
from projectors.store import Store, open_store
from tests.projectors._plog import STEP_TYPES, Written, mixed

SLOW_PROJECTOR = Path(__file__).with_name("_projector_proc.py")
APPENDED = ("steps", "model_calls", "artifacts", "commands")
COMMANDS = ("project.create", "project.update", "project.archive", "run.start", "run.cancel")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "live.duckdb") as opened:
        yield opened


def scalar(store: Store, sql: str) -> int:
    row = store.connection.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def assert_projected_once(store: Store, written: Written) -> None:
    """Every message counted once: exact row counts, one step per step event, statuses as written."""
    assert store.connection.execute("SELECT last_seq, events, skipped FROM checkpoint").fetchall() == [
        (written.last_seq, written.messages, 0)
    ]
    assert scalar(store, "SELECT count(*) FROM steps") == written.count(*STEP_TYPES)
    assert scalar(store, "SELECT count(*) FROM model_calls") == written.count("run.model_call_recorded")
    assert scalar(store, "SELECT count(*) FROM artifacts") == written.count("run.artifact_stored")
    assert scalar(store, "SELECT count(*) FROM commands") == written.count(*COMMANDS)
    for table in APPENDED:
        assert scalar(store, f"SELECT count(*) - count(DISTINCT seq) FROM {table}") == 0  # noqa: S608
    run_events = (
        written.messages
        - written.count(*COMMANDS)
        - written.count("project.created", "project.updated", "project.archived")
    )
    assert scalar(store, "SELECT sum(events) FROM runs") == run_events
    assert dict(store.connection.execute("SELECT run_id, status FROM runs").fetchall()) == written.runs
    archived = written.count("project.archived")
    assert scalar(store, "SELECT count(*) FROM projects WHERE status = 'archived'") == archived


async def test_live_projector_follows_the_log_and_answers_wait_for(
    conn: bus.Connection, store: Store
) -> None:
    """Following a log while it is written, the projector reaches its end and `wait_for` tracks it."""
    projector = Projector(conn, store, max_batch=64)
    following = asyncio.create_task(projector.run())
    try:
        written = await mixed(conn.log)
        assert await projector.wait_for(written.last_seq, within=15)
        assert_projected_once(store, written)
        assert not await projector.wait_for(written.last_seq + 1, within=0.2)

        later = await mixed(conn.log, tenants=("initech",), runs=2)  # after the end: still followed
        assert await projector.wait_for(later.last_seq, within=15)
        assert projector.applied_seq == store.last_seq == later.last_seq
        assert scalar(store, "SELECT count(*) FROM runs WHERE tenant = 'initech'") == 2
    finally:
        projector.shutdown()
        async with asyncio.timeout(10):
            await following


async def test_until_end_stops_at_the_current_end(conn: bus.Connection, store: Store) -> None:
    """`run(until_end=True)` applies what is in the log and returns; a second run resumes from there."""
    first = await mixed(conn.log, runs=3)
    async with asyncio.timeout(15):
        await Projector(conn, store, max_batch=16).run(until_end=True)
    assert store.last_seq == first.last_seq
    await mixed(conn.log, tenants=("initech",), runs=2)
    async with asyncio.timeout(15):
        await Projector(conn, store).run(until_end=True)
    info = await conn.js.stream_info(conn.settings.stream)
    assert store.last_seq == info.state.last_seq
    assert scalar(store, "SELECT events FROM checkpoint") == info.state.messages


async def committing(process: asyncio.subprocess.Process, nth: int) -> list[int]:
    """The batch sequences the slow projector announced, up to its `nth` COMMIT (then still pending)."""
    assert process.stdout is not None
    announced = []
    async with asyncio.timeout(30):
        while line := (await process.stdout.readline()).decode():
            if line.startswith("COMMITTING"):
                announced.append(int(line.split()[2]))
                if len(announced) == nth:
                    return announced
    pytest.fail(f"the slow projector exited ({await process.wait()}) after {len(announced)} commits")


async def test_sigkill_mid_batch_then_restart_equals_a_clean_rebuild(
    conn: bus.Connection, bus_settings: bus.Settings, tmp_path: Path
) -> None:
    """Killed inside a transaction, the file keeps the last committed batch; resuming matches a rebuild."""
    written = await mixed(conn.log, tenants=("acme", "globex", "initech"))
    path = tmp_path / "killed.duckdb"
    args = [bus_settings.url, str(path), "8", "0.05"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SLOW_PROJECTOR), *args, stdout=asyncio.subprocess.PIPE
    )
    try:
        announced = await committing(process, nth=5)
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL
    committed, in_flight = announced[-2], announced[-1]
    assert 0 < committed < in_flight < written.last_seq

    with open_store(path) as store:
        assert store.last_seq == committed  # the batch being committed left nothing behind
        for table in APPENDED:
            assert scalar(store, f"SELECT coalesce(max(seq), 0) FROM {table}") <= committed  # noqa: S608
        assert scalar(store, "SELECT max(last_seq) FROM runs") <= committed

        async with asyncio.timeout(20):
            await Projector(conn, store, max_batch=8).run(until_end=True)
        assert_projected_once(store, written)

        clean = tmp_path / "clean.duckdb"
        assert await rebuild(conn, clean) == written.last_seq
        with open_store(clean) as rebuilt:
            drift = compare(store.connection, rebuilt.connection)
    assert drift.seq == written.last_seq
    assert drift.tables_differing == []
