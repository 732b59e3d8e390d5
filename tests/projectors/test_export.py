"""Parquet exports and DuckDB snapshots: complete, readable anywhere, and consistent while the writer runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

import bus
from projectors.export import MANIFEST, export_parquet, read_manifest, snapshot
from projectors.rows import TABLES
from projectors.sql import run_sql
from projectors.store import VIEWS, Store, open_store
from tests.projectors._sample import TENANTS, workload
from tests.projectors._support import Tables, appended, batches, parquet_tables, rebuilt_at, tables


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.duckdb") as store:
        store.apply(workload(TENANTS, runs=3))
        yield store


def test_export_writes_one_parquet_file_per_table_and_a_manifest(store: Store, tmp_path: Path) -> None:
    """Every read-model table becomes `<table>.parquet`, and the manifest is the last file written."""
    files = export_parquet(store, tmp_path / "export")

    assert [path.name for path in files] == [f"{table.TABLE}.parquet" for table in TABLES] + [MANIFEST]
    assert sorted(path.name for path in (tmp_path / "export").iterdir()) == sorted(p.name for p in files)


def test_export_reads_back_equal_to_the_store(store: Store, tmp_path: Path) -> None:
    """Read back with read_parquet, each file holds exactly the table's rows, in key order."""
    export_parquet(store, tmp_path / "export")

    assert parquet_tables(tmp_path / "export") == tables(store.connection)


def test_manifest_records_sequence_counts_columns_and_views(store: Store, tmp_path: Path) -> None:
    """The manifest names the log sequence the files reflect, and each table's rows and columns."""
    export_parquet(store, tmp_path / "export")
    manifest = read_manifest(tmp_path / "export")
    live = tables(store.connection)

    assert manifest.last_seq == store.last_seq == len(workload(TENANTS, runs=3))
    assert {name: entry.rows for name, entry in manifest.tables.items()} == {
        n: len(r) for n, r in live.items()
    }
    for table in TABLES:
        assert [column.name for column in manifest.tables[table.TABLE].columns] == list(table.columns())
    assert manifest.tables["runs"].columns[0].type == "VARCHAR"
    assert manifest.views == VIEWS


def test_a_second_export_replaces_the_first(store: Store, tmp_path: Path) -> None:
    """Exporting again into the same directory leaves the newer state, manifest included."""
    export_parquet(store, tmp_path / "export")
    _apply_more(store)
    export_parquet(store, tmp_path / "export")

    assert read_manifest(tmp_path / "export").last_seq == store.last_seq
    assert parquet_tables(tmp_path / "export") == tables(store.connection)


def test_snapshot_opens_read_only_elsewhere_and_equals_the_live_tables(store: Store, tmp_path: Path) -> None:
    """While the store stays open, its snapshot opens read-only with tables, views and checkpoint intact."""
    target = snapshot(store, tmp_path / "snapshots" / "copy.duckdb")

    with duckdb.connect(str(target), read_only=True) as con:
        assert tables(con) == tables(store.connection)
        assert con.execute("SELECT last_seq FROM checkpoint").fetchall() == [(store.last_seq,)]
        for view in VIEWS:
            assert con.execute(f"SELECT count(*) FROM {view}").fetchall()  # noqa: S608 - names are ours
    assert sorted(path.name for path in target.parent.iterdir()) == ["copy.duckdb"]


def test_a_snapshot_replaces_an_older_one(store: Store, tmp_path: Path) -> None:
    """Snapshotting to an existing path swaps in the newer copy whole."""
    target = snapshot(store, tmp_path / "copy.duckdb")
    _apply_more(store)
    snapshot(store, target)

    with duckdb.connect(str(target), read_only=True) as con:
        assert tables(con) == tables(store.connection)


def test_analyst_sql_runs_over_a_snapshot(store: Store, tmp_path: Path) -> None:
    """A snapshot opened read-only serves tenant-scoped analyst SQL like the live store."""
    target = snapshot(store, tmp_path / "copy.duckdb")

    with duckdb.connect(str(target), read_only=True) as con:
        result = run_sql(con, "acme", "SELECT DISTINCT tenant FROM steps")

    assert result.rows == [["acme"]]


def test_exports_are_consistent_while_the_writer_writes(tmp_path: Path) -> None:
    """Exports taken during a stream of batches each equal a rebuild at the sequence their manifest names."""
    records = workload(TENANTS, runs=20)

    def take(store: Store, round_: int) -> tuple[int, Tables]:
        directory = tmp_path / f"export-{round_}"
        export_parquet(store, directory)
        return read_manifest(directory).last_seq, parquet_tables(directory)

    _check_copies_while_writing(tmp_path, records, take)


def test_snapshots_are_consistent_while_the_writer_writes(tmp_path: Path) -> None:
    """Snapshots taken during a stream of batches each equal a rebuild at their own checkpoint."""
    records = workload(TENANTS, runs=20)

    def take(store: Store, round_: int) -> tuple[int, Tables]:
        target = snapshot(store, tmp_path / f"snapshot-{round_}.duckdb")
        with duckdb.connect(str(target), read_only=True) as con:
            row = con.execute("SELECT last_seq FROM checkpoint").fetchone()
            return int(row[0]) if row else 0, tables(con)

    _check_copies_while_writing(tmp_path, records, take)


def _check_copies_while_writing(
    tmp_path: Path, records: list[bus.Record], take: Callable[[Store, int], tuple[int, Tables]]
) -> None:
    """Take copies while another thread applies batches, then compare each with a rebuild at its seq."""
    copies: dict[int, Tables] = {}
    copying = threading.Semaphore(0)  # the writer applies each batch once a copy has begun
    with open_store(tmp_path / "live.duckdb") as store:
        writer = threading.Thread(target=_apply_all, args=(store, records, copying))
        writer.start()
        while writer.is_alive():
            copying.release()
            seq, content = take(store, len(copies))
            copies[seq] = content
        writer.join()
    with open_store(tmp_path / "rebuilt.duckdb") as rebuilt:
        checked = dict(rebuilt_at(rebuilt, records, set(copies)))

    assert len(copies) >= 2
    assert checked.keys() == copies.keys()
    assert all(copies[seq] == checked[seq] for seq in copies)


def _apply_all(store: Store, records: list[bus.Record], copying: threading.Semaphore) -> None:
    for batch in batches(records):
        copying.acquire(timeout=10)
        store.apply(batch)


def _apply_more(store: Store) -> None:
    store.apply(appended(store, workload(("acme",), runs=1, seed=99)))
