"""Helpers for the analyst tests: read whole tables back in key order, and feed a store in batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import msgspec

import bus
from projectors.rows import TABLES
from projectors.store import Store

Tables = dict[str, list[tuple[Any, ...]]]


def tables(con: duckdb.DuckDBPyConnection) -> Tables:
    """Every read-model table of a database, rows in key order."""
    return {
        table.TABLE: con.execute(f"SELECT * FROM {table.TABLE} ORDER BY {table.KEY}").fetchall()  # noqa: S608
        for table in TABLES
    }


def parquet_tables(directory: Path) -> Tables:
    """The same, read from the Parquet files of an export with a separate in-memory DuckDB."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return {
            table.TABLE: con.execute(
                f"SELECT * FROM read_parquet($path) ORDER BY {table.KEY}",  # noqa: S608
                {"path": str(directory / f"{table.TABLE}.parquet")},
            ).fetchall()
            for table in TABLES
        }


def batches(
    records: Sequence[bus.Record], first: int = 100, size: int = 25
) -> Iterator[Sequence[bus.Record]]:
    """The records cut into batches: one of `first`, then batches of `size`."""
    yield records[:first]
    for start in range(first, len(records), size):
        yield records[start : start + size]


def rebuilt_at(store: Store, records: Sequence[bus.Record], seqs: set[int]) -> Iterator[tuple[int, Tables]]:
    """Apply the same batches to an empty store; yield its tables whenever it reaches one of `seqs`."""
    if 0 in seqs:
        yield 0, tables(store.connection)
    for batch in batches(records):
        seq = store.apply(batch)
        if seq in seqs:
            yield seq, tables(store.connection)


def appended(store: Store, records: Sequence[bus.Record]) -> list[bus.Record]:
    """`records` renumbered to follow the store's last applied sequence, as later log records."""
    return [msgspec.structs.replace(record, seq=store.last_seq + record.seq) for record in records]
