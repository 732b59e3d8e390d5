"""Read-model rows and log records are plain values the garbage collector does not track."""

from __future__ import annotations

import gc

import msgspec

import bus
from projectors.rows import TABLES, RunRow


def test_rows_and_records_are_not_tracked_by_the_collector() -> None:
    """A batch makes thousands of rows and records; none can be part of a reference cycle, so the
    collector need not walk them (`gc=False`), and every table's row type inherits that."""
    run = RunRow(run_id="run_1", tenant="acme")
    run.status, run.events = "running", 3  # rows stay mutable for the fold
    copy = msgspec.structs.replace(run)
    record = bus.Record(seq=1, subject="swarm.acme.evt.run.run_1.started", data=b"{}")

    assert not gc.is_tracked(run)
    assert not gc.is_tracked(copy)
    assert not gc.is_tracked(record)
    assert copy.status == "running"
    assert copy.events == 3
    assert all(table.__struct_config__.gc is False for table in TABLES)
