"""Analyst copies of the read models: Parquet files with a manifest, and a snapshot of the DuckDB file.

Both read through a cursor of the store in one transaction, so they reflect exactly one checkpoint (one
applied batch) while the projector keeps writing. Only tables are exported to Parquet: the dashboard
views are queries over `runs`, and the manifest carries their SQL so they can be recreated over the files.

Parquet layout of `export_parquet(store, DIR)`:

    DIR/<table>.parquet   one file per read-model table (projects, runs, steps, model_calls, artifacts,
                          commands, patterns, pattern_uses), rows ordered by the table's key
    DIR/manifest.json     written last: the log sequence the files reflect (`last_seq`), events applied
                          and skipped, per table its file, row count and columns, and the views' SQL
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import msgspec

from projectors.rows import TABLES, Row
from projectors.store import VIEWS, Store

MANIFEST = "manifest.json"
FORMAT = 1


class Column(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: str  # the DuckDB type, e.g. VARCHAR, BIGINT, TIMESTAMP WITH TIME ZONE


class TableFile(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    rows: int
    columns: list[Column]


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What an export holds; `last_seq` is the log sequence every file reflects."""

    format: int
    last_seq: int
    events: int
    skipped: int
    tables: dict[str, TableFile]
    views: dict[str, str]


def export_parquet(store: Store, directory: Path) -> list[Path]:
    """Write every read-model table as `<directory>/<table>.parquet`, then `manifest.json`.

    All files come from one transaction. An older manifest is removed first, so a directory with a
    manifest always holds a complete, consistent export. Returns the files written, manifest last.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    with _read_transaction(store) as cursor:
        tables = {table.TABLE: _export_table(cursor, table, directory) for table in TABLES}
        last_seq, events, skipped = _checkpoint(cursor)
    manifest = Manifest(
        format=FORMAT, last_seq=last_seq, events=events, skipped=skipped, tables=tables, views=dict(VIEWS)
    )
    path = directory / MANIFEST
    partial = path.with_name(f".{MANIFEST}.partial")
    partial.write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
    partial.replace(path)
    return [directory / entry.file for entry in tables.values()] + [path]


def read_manifest(directory: Path) -> Manifest:
    """The manifest of an export directory."""
    return msgspec.json.decode((directory / MANIFEST).read_bytes(), type=Manifest)


def snapshot(store: Store, target: Path) -> Path:
    """Copy the whole database (tables, views, checkpoint) to a new DuckDB file at `target`, atomically.

    The copy reflects one checkpoint while the store keeps writing; any DuckDB client can open it, also
    read-only. An existing file at `target` is replaced.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    alias = f"snapshot_{uuid.uuid4().hex}"
    cursor = store.cursor()
    try:
        source = _quote(_current_database(cursor))
        cursor.execute(f"ATTACH $path AS {alias}", {"path": str(partial)})
        try:
            _in_transaction(cursor, f"COPY FROM DATABASE {source} TO {alias}")
        finally:
            cursor.execute(f"DETACH {alias}")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        cursor.close()
    target.with_name(target.name + ".wal").unlink(missing_ok=True)  # a stale WAL would be replayed onto it
    os.replace(partial, target)
    return target


def _export_table(cursor: duckdb.DuckDBPyConnection, table: type[Row], directory: Path) -> TableFile:
    file = f"{table.TABLE}.parquet"
    query = f"SELECT * FROM {table.TABLE} ORDER BY {table.KEY}"  # noqa: S608 - names are ours
    row = cursor.execute(
        f"COPY ({query}) TO $path (FORMAT parquet, COMPRESSION zstd)", {"path": str(directory / file)}
    ).fetchone()
    columns = cursor.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = $table ORDER BY column_index",
        {"table": table.TABLE},
    ).fetchall()
    return TableFile(
        file=file,
        rows=int(row[0]) if row else 0,
        columns=[Column(name=name, type=kind) for name, kind in columns],
    )


def _checkpoint(cursor: duckdb.DuckDBPyConnection) -> tuple[int, int, int]:
    row = cursor.execute("SELECT last_seq, events, skipped FROM checkpoint WHERE id = 1").fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


@contextlib.contextmanager
def _read_transaction(store: Store) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor inside one read transaction: every query sees the same committed state."""
    cursor = store.cursor()
    try:
        cursor.execute("BEGIN TRANSACTION")
        try:
            yield cursor
        finally:
            cursor.execute("ROLLBACK")  # nothing to keep: the transaction only read
    finally:
        cursor.close()


def _in_transaction(cursor: duckdb.DuckDBPyConnection, statement: str) -> None:
    cursor.execute("BEGIN TRANSACTION")
    try:
        cursor.execute(statement)
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    cursor.execute("COMMIT")


def _current_database(cursor: duckdb.DuckDBPyConnection) -> str:
    row = cursor.execute("SELECT current_database()").fetchone()
    return str(row[0]) if row else "main"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
