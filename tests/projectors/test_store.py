"""The store folds a recorded log into the expected rows, once per sequence, skipping what it cannot read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

import bus
from projectors.rebuild import checksums
from projectors.store import LogGap, Store, open_store
from tests.projectors._plog import golden_records

PROJECT = "prj_01JHMMRRD82SHNRB5JEXZRE780"
SUCCEEDED = "run_01JHMMRTBRCD0ZGRFZK6FPC0GS"
CANCELLED = "run_01JHMMS720KB7KJ7S3VS93W5MV"
CLIENT = "key_01JHMMRQE0QKCCH3M1Z0NHANN5"
PRICES = Path(__file__).parents[2] / "projectors" / "prices.json"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "golden.duckdb") as opened:
        yield opened


def rows(store: Store, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Query results as dicts keyed by column name."""
    cursor = store.connection.execute(sql, list(params))
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def one(store: Store, sql: str, *params: Any) -> dict[str, Any]:
    found = rows(store, sql, *params)
    assert len(found) == 1, found
    return found[0]


def at(second: int) -> datetime:
    return datetime(2025, 1, 15, 9, 30, second, tzinfo=UTC)


def record(seq: int, data: bytes) -> bus.Record:
    return bus.Record(seq=seq, subject=f"swarm.acme.evt.run.{CANCELLED}", data=data)


def test_golden_log_gives_the_expected_project(store: Store) -> None:
    """The recorded project appears with its name, status, source and the sequence that last touched it."""
    store.apply(golden_records())
    project = one(store, "SELECT * FROM projects")
    assert project["project_id"] == PROJECT
    assert (project["tenant"], project["name"], project["status"]) == ("acme", "shop", "active")
    assert (project["source_kind"], project["source"]) == (
        "git",
        "https://git.example.com/acme/shop.git main",
    )
    assert project["description"] == "The Acme web shop"
    assert (project["created_at"], project["version"], project["last_seq"]) == (at(2), 1, 2)


def test_golden_log_gives_the_expected_runs(store: Store) -> None:
    """Both runs end in their recorded status with attempt, timings, tokens and a cost priced from data."""
    store.apply(golden_records())
    done = one(store, "SELECT * FROM runs WHERE run_id = ?", SUCCEEDED)
    assert (done["status"], done["attempt"], done["executor_id"], done["sandbox"]) == (
        "succeeded", 1, "exe_golden-1", "docker",
    )  # fmt: skip
    assert (done["project_id"], done["task_type"], done["requested_by"]) == (PROJECT, "code", CLIENT)
    assert (done["queued_at"], done["started_at"], done["finished_at"]) == (at(3), at(4), at(15))
    assert (done["queue_wait_ms"], done["duration_ms"]) == (1_000, 11_000)
    assert (done["tokens_in"], done["tokens_cached"], done["tokens_out"], done["tokens_reasoning"]) == (
        18_250, 12_032, 1_408, 640,
    )  # fmt: skip
    default = json.loads(PRICES.read_text())["default"]  # no model call recorded: the default price
    dollars = (
        (18_250 - 12_032) * default["input"] + 12_032 * default["cached_input"] + 1_408 * default["output"]
    )
    assert done["cost_usd"] > 0
    assert done["cost_usd"] == pytest.approx(dollars / 1e6, abs=1e-6)
    assert (done["steps"], done["commands_run"], done["files_changed"], done["events"]) == (7, 2, 1, 12)
    assert (done["progress_pct"], done["last_seq"]) == (100.0, 15)
    assert done["final_message"].startswith("Fixed the rounding in `Cart.total`")
    assert json.loads(done["summary"])["files_changed"] == ["shop/cart.py"]
    assert done["failure_reason"] is None

    cancelled = one(store, "SELECT * FROM runs WHERE run_id = ?", CANCELLED)
    assert (cancelled["status"], cancelled["cancelled_by"], cancelled["attempt"]) == ("cancelled", CLIENT, 1)
    assert (cancelled["queue_wait_ms"], cancelled["duration_ms"]) == (1_000, 3_000)
    assert (cancelled["steps"], cancelled["tokens_in"], cancelled["cost_usd"]) == (0, 0, 0.0)
    assert (cancelled["events"], cancelled["last_seq"]) == (3, 20)


def test_golden_log_gives_ordered_steps_and_the_artifact(store: Store) -> None:
    """Steps keep the log's order with their kinds and exit codes; the diff is indexed as an artifact."""
    store.apply(golden_records())
    steps = rows(store, "SELECT * FROM steps ORDER BY seq")
    assert [step["seq"] for step in steps] == [6, 7, 8, 9, 10, 11, 12]
    assert [step["kind"] for step in steps] == [
        "reasoning", "command_started", "command_executed", "files_changed",
        "command_started", "command_executed", "agent_message",
    ]  # fmt: skip
    assert [step["exit_code"] for step in steps] == [None, None, 1, None, None, 0, None]
    assert [step["status"] for step in steps][1:4] == ["in_progress", "failed", "completed"]
    assert steps[3]["summary"] == "update shop/cart.py"
    assert {step["run_id"] for step in steps} == {SUCCEEDED}

    artifact = one(store, "SELECT * FROM artifacts")
    assert (artifact["seq"], artifact["run_id"], artifact["name"], artifact["kind"]) == (
        14, SUCCEEDED, "final.diff", "diff",
    )  # fmt: skip
    assert artifact["sha256"] == "3f8de19fb5ca1cafed02b291cdf88b46f438875bd0bbd6e24fe0b2e51ea969ce"
    assert (artifact["size"], artifact["media_type"], artifact["occurred_at"]) == (193, "text/x-diff", at(14))
    assert rows(store, "SELECT count(*) AS n FROM model_calls") == [{"n": 0}]


def test_golden_log_gives_the_command_audit_index(store: Store) -> None:
    """Every command is indexed by sequence with who asked, for what, and when; events are not."""
    store.apply(golden_records())
    commands = rows(store, "SELECT * FROM commands ORDER BY seq")
    assert [(c["seq"], c["type"], c["aggregate"]) for c in commands] == [
        (1, "project.create", "project"), (3, "run.start", "run"),
        (16, "run.start", "run"), (19, "run.cancel", "run"),
    ]  # fmt: skip
    assert {c["actor"] for c in commands} == {CLIENT}
    assert [c["aggregate_id"] for c in commands] == [PROJECT, SUCCEEDED, CANCELLED, CANCELLED]
    assert [c["issued_at"] for c in commands] == [at(1), at(3), at(16), at(19)]
    assert commands[0]["origin"] == "cli/0.1.0"
    assert one(store, "SELECT * FROM checkpoint") == {"id": 1, "last_seq": 20, "events": 20, "skipped": 0}


def test_applying_the_same_records_again_changes_nothing(store: Store) -> None:
    """The checkpoint makes a replayed batch, or a replayed tail inside a longer one, a no-op."""
    records = golden_records()
    assert store.apply(records) == 20
    before = checksums(store.connection)
    assert store.apply(records) == 20
    assert store.apply(records[10:]) == 20
    assert checksums(store.connection) == before
    assert one(store, "SELECT events FROM checkpoint")["events"] == 20


def test_batch_boundaries_do_not_change_the_tables(store: Store, tmp_path: Path) -> None:
    """Folding the log one record at a time gives the same tables as folding it in one batch."""
    records = golden_records()
    store.apply(records)
    with open_store(tmp_path / "one-by-one.duckdb") as single:
        for each in records:
            single.apply([each])
        assert checksums(single.connection) == checksums(store.connection)


def test_unknown_message_type_is_skipped_and_counted(store: Store) -> None:
    """A type from a newer writer is counted under its name and passed over; what follows still applies."""
    records = golden_records()
    newer = json.loads(records[-1].data) | {"type": "run.teleported", "destination": "mars"}
    store.apply([*records[:-1], record(20, json.dumps(newer).encode())])
    store.apply([msgspec.structs.replace(records[-1], seq=21)])
    assert one(store, "SELECT * FROM skipped") == {"type": "run.teleported", "count": 1, "last_seq": 20}
    assert one(store, "SELECT * FROM checkpoint") == {"id": 1, "last_seq": 21, "events": 20, "skipped": 1}
    assert one(store, "SELECT status FROM runs WHERE run_id = ?", CANCELLED) == {"status": "cancelled"}


def test_a_gap_in_the_sequence_is_refused(store: Store) -> None:
    """A batch that skips a sequence (a message lost on the way) raises and writes nothing."""
    records = golden_records()
    store.apply(records[:10])
    before = checksums(store.connection)
    with pytest.raises(LogGap) as gap:
        store.apply(records[11:])
    assert (gap.value.expected, gap.value.found) == (11, 12)
    with pytest.raises(LogGap):
        store.apply([*records[10:15], *records[16:]])  # a hole inside the batch
    assert checksums(store.connection) == before
    assert store.apply(records[10:]) == 20  # the whole tail still applies afterwards


def test_an_empty_file_may_start_past_sequence_one(store: Store) -> None:
    """The log's head can age out, so a fresh projection starts at whatever sequence comes first."""
    assert store.apply(golden_records()[15:]) == 20
    assert one(store, "SELECT events FROM checkpoint") == {"events": 5}


def test_invalid_message_is_counted_as_invalid(store: Store) -> None:
    """Undecodable bytes and a known type with a missing field are counted as `invalid`, not fatal."""
    records = golden_records()
    broken = json.loads(records[-1].data)
    del broken["cancelled_by"]
    store.apply([*records[:5], record(6, b"{not json"), record(7, json.dumps(broken).encode())])
    assert one(store, "SELECT * FROM skipped") == {"type": "invalid", "count": 2, "last_seq": 7}
    assert one(store, "SELECT * FROM checkpoint") == {"id": 1, "last_seq": 7, "events": 5, "skipped": 2}
    assert one(store, "SELECT status FROM runs")["status"] == "running"
