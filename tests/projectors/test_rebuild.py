"""A rebuild from sequence 1 equals the live projection, drift is pinned to its table, swaps are atomic."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

import bus
from projectors.partition import RebuildFailed, fold_in_parallel
from projectors.prices import load as load_prices
from projectors.projector import Projector
from projectors.rebuild import (
    CHECKED,
    NotComparable,
    check,
    checksums,
    compare,
    rebuild,
)
from projectors.store import open_store
from tests.bus._waits import Check, eventually
from tests.projectors._plog import golden_records, mixed

# One edit per table, each as small as drift gets: a microsecond, a NULL either way, a float's last
# digits, a lost row, two rows trading a value (the column's multiset of values stays the same).
ALTERATIONS = {
    "runs": "UPDATE runs SET finished_at = finished_at + INTERVAL 1 MICROSECOND WHERE status = 'failed'",
    "steps": "UPDATE steps SET exit_code = NULL WHERE exit_code = 1",
    "projects": "UPDATE projects SET archived_at = updated_at WHERE archived_at IS NULL",
    "model_calls": "UPDATE model_calls SET cost_usd = cost_usd + 1e-12 "
    "WHERE seq = (SELECT min(seq) FROM model_calls)",
    "commands": "DELETE FROM commands WHERE seq = (SELECT max(seq) FROM commands)",
    "artifacts": "UPDATE artifacts SET run_id = CASE WHEN seq = (SELECT min(seq) FROM artifacts) "
    "THEN (SELECT run_id FROM artifacts ORDER BY seq DESC LIMIT 1) "
    "ELSE (SELECT run_id FROM artifacts ORDER BY seq LIMIT 1) END "
    "WHERE seq IN ((SELECT min(seq) FROM artifacts), (SELECT max(seq) FROM artifacts))",
}


def condition(predicate: Callable[[], bool]) -> Check:
    async def check() -> bool:
        return predicate()

    return check


def last_seq(path: Path) -> int:
    with contextlib.closing(duckdb.connect(str(path), read_only=True)) as con:
        row = con.execute("SELECT last_seq FROM checkpoint").fetchone()
    assert row is not None
    return int(row[0])


async def test_rebuild_equals_the_live_projection_after_a_mixed_workload(
    conn: bus.Connection, tmp_path: Path
) -> None:
    """After every kind of message from three tenants, the drift check finds no table differing."""
    with open_store(tmp_path / "live.duckdb") as store:
        projector = Projector(conn, store, max_batch=32)
        following = asyncio.create_task(projector.run())
        try:
            written = await mixed(conn.log, tenants=("acme", "globex", "initech"))
            assert await projector.wait_for(written.last_seq, within=15)
            with contextlib.closing(store.cursor()) as cursor:
                drift = await check(conn, cursor, workdir=tmp_path)
        finally:
            projector.shutdown()
            await following
        sums = checksums(store.connection)
    assert (drift.seq, drift.tables_differing, drift.clean) == (written.last_seq, [], True)
    assert set(sums) == set(CHECKED)
    for table in ("projects", "runs", "steps", "model_calls", "artifacts", "commands"):
        assert sums[table].rows > 0, table  # the equality is not between empty tables
    assert list(tmp_path.glob("swarm-drift-*")) == []


async def test_altered_row_is_drift_on_exactly_its_table(conn: bus.Connection, tmp_path: Path) -> None:
    """Each small edit to a copy of the live file is reported on that table and no other."""
    written = await mixed(conn.log)
    live, rebuilt = tmp_path / "live.duckdb", tmp_path / "rebuilt.duckdb"
    with open_store(live) as store:
        await Projector(conn, store, max_batch=10).run(until_end=True)
    assert await rebuild(conn, rebuilt) == written.last_seq
    with contextlib.closing(duckdb.connect(str(rebuilt), read_only=True)) as clean:
        for table, edit in ALTERATIONS.items():
            altered = shutil.copy(live, tmp_path / f"altered-{table}.duckdb")
            with contextlib.closing(duckdb.connect(str(altered))) as con:
                assert compare(con, clean).tables_differing == []
                con.execute(edit)
                drift = compare(con, clean)
            assert [each.table for each in drift.tables_differing] == [table], edit
            assert drift.tables_differing[0].live != drift.tables_differing[0].rebuilt


async def test_rebuild_swaps_the_new_file_in_atomically(conn: bus.Connection, tmp_path: Path) -> None:
    """While a rebuild runs, the target always opens as the old projection or the finished new one."""
    await mixed(conn.log, runs=3)
    target = tmp_path / "swarm.duckdb"
    old = await rebuild(conn, target, until_seq=20)
    written = await mixed(conn.log, tenants=("globex",), runs=4)
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.002):  # a short pause between opens leaves the rebuild some CPU
            seen.append(last_seq(target))  # raises if the target is ever missing or not a database

    watcher = asyncio.create_task(asyncio.to_thread(watch))
    try:
        await eventually(condition(lambda: bool(seen)))
        assert await rebuild(conn, target, max_batch=8) == written.last_seq
        await eventually(condition(lambda: seen[-1] == written.last_seq))
    finally:
        stop.set()
        await watcher
    assert old == 20
    assert set(seen) == {20, written.last_seq}
    assert sorted(path.name for path in tmp_path.glob("swarm.duckdb*")) == ["swarm.duckdb"]


async def test_cancelled_rebuild_leaves_the_old_file(conn: bus.Connection, tmp_path: Path) -> None:
    """Cancelling a rebuild half way keeps the old target and removes the partial file."""
    written = await mixed(conn.log)
    target = tmp_path / "swarm.duckdb"
    await rebuild(conn, target, until_seq=10)
    scratch = tmp_path / "swarm.duckdb.rebuild"
    rebuilding = asyncio.create_task(rebuild(conn, target, max_batch=2))
    await eventually(condition(scratch.exists))
    rebuilding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await rebuilding
    assert rebuilding.cancelled()
    assert last_seq(target) == 10 < written.last_seq
    assert sorted(path.name for path in tmp_path.glob("swarm.duckdb*")) == ["swarm.duckdb"]


async def test_check_compares_at_the_live_sequence_while_the_projector_applies(
    conn: bus.Connection, tmp_path: Path
) -> None:
    """A check taken while the live projector keeps applying new messages still compares like with like."""
    with open_store(tmp_path / "live.duckdb") as store:
        projector = Projector(conn, store, max_batch=4)
        following = asyncio.create_task(projector.run())
        try:
            first = await mixed(conn.log, runs=3)
            assert await projector.wait_for(first.last_seq, within=15)
            more = asyncio.create_task(mixed(conn.log, tenants=("initech",), runs=7))
            with contextlib.closing(store.cursor()) as cursor:
                drift = await check(conn, cursor)
            second = await more
            assert await projector.wait_for(second.last_seq, within=15)
        finally:
            projector.shutdown()
            await following
    assert drift.clean
    assert first.last_seq <= drift.seq <= second.last_seq


def test_projections_at_different_sequences_are_not_compared(tmp_path: Path) -> None:
    """Comparing a projection at sequence 20 with one at 10 is refused rather than reported as drift."""
    records = golden_records()
    with open_store(tmp_path / "ahead.duckdb") as ahead, open_store(tmp_path / "behind.duckdb") as behind:
        ahead.apply(records)
        behind.apply(records[:10])
        with pytest.raises(NotComparable) as refused:
            compare(ahead.connection, behind.connection)
    assert (refused.value.live_seq, refused.value.rebuilt_seq) == (20, 10)


@pytest.mark.parametrize("workers", [2, 3])
async def test_a_parallel_rebuild_equals_one_fold(conn: bus.Connection, tmp_path: Path, workers: int) -> None:
    """Runs folded by several processes and merged give every table of a single fold, the counts of
    skipped messages included, whole or up to a sequence."""
    written = await mixed(conn.log, tenants=("acme", "globex", "initech"))
    await conn.js.publish("swarm.acme.evt.run.run_01JZZZZZZZZZZZZZZZZZZZZZZZ", b'{"type": "run.newer_thing"}')
    end = written.last_seq + 1
    for until in (None, written.last_seq // 2):
        one, many = tmp_path / f"one-{until}.duckdb", tmp_path / f"many-{until}.duckdb"
        assert await rebuild(conn, one, until_seq=until) == (until or end)
        assert await rebuild(conn, many, until_seq=until, workers=workers, max_batch=16) == (until or end)
        with (
            contextlib.closing(duckdb.connect(str(one), read_only=True)) as single,
            contextlib.closing(duckdb.connect(str(many), read_only=True)) as merged,
        ):
            assert compare(single, merged).tables_differing == [], until
            counts = merged.execute("SELECT count(*) FROM runs").fetchone()
            assert counts is not None
            assert counts[0] > workers  # every partition had runs to fold
    with contextlib.closing(duckdb.connect(str(tmp_path / "many-None.duckdb"), read_only=True)) as merged:
        assert merged.execute("SELECT type, count FROM skipped").fetchall() == [("run.newer_thing", 1)]
    assert sorted(p.name for p in tmp_path.glob("*.duckdb*")) == sorted(
        f"{side}-{until}.duckdb" for side in ("one", "many") for until in (None, written.last_seq // 2)
    )


async def test_a_cancelled_parallel_rebuild_stops_its_workers_and_leaves_the_old_file(
    conn: bus.Connection, tmp_path: Path
) -> None:
    """Cancelling a rebuild while its workers fold kills them and removes every partial file."""
    written = await mixed(conn.log)
    target = tmp_path / "swarm.duckdb"
    await rebuild(conn, target, until_seq=10)
    rebuilding = asyncio.create_task(rebuild(conn, target, max_batch=2, workers=2))
    await eventually(condition(lambda: (tmp_path / "swarm.duckdb.rebuild.1").exists()), within=30)
    assert _workers() != []
    rebuilding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await rebuilding
    assert rebuilding.cancelled()
    assert _workers() == []
    assert last_seq(target) == 10 < written.last_seq
    assert sorted(path.name for path in tmp_path.glob("swarm.duckdb*")) == ["swarm.duckdb"]


async def test_a_failing_worker_fails_the_rebuild_with_its_reason(
    conn: bus.Connection, tmp_path: Path
) -> None:
    """A worker that cannot do its share ends the fold with `RebuildFailed`, its last words and no
    worker left running."""
    await mixed(conn.log, runs=3)
    parts = [tmp_path / "part.0", tmp_path / "part.1"]
    parts[1].mkdir()  # not a database file: worker 1 cannot open it
    with pytest.raises(RebuildFailed, match=r"worker 1 failed \(exit status 1\): .*part\.1") as failed:
        await fold_in_parallel(conn, parts, await conn.log.end(), load_prices(), max_batch=16)
    assert failed.value.index == 1
    assert _workers() == []
    assert sorted(path.name for path in tmp_path.glob("part.*.log")) == []


def _workers() -> list[str]:
    """The command lines of running rebuild workers (children of this test process)."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "status").read_text()
            if "projectors.partition" in cmdline and "State:\tZ" not in status:
                found.append(cmdline)
    return found
