"""The DuckDB file a projector owns: read models plus the log position they reflect, moved together.

Every batch is applied in one transaction that also stores the last applied stream sequence, so a crash
leaves the file exactly at some batch boundary: restarting from the stored sequence never applies an
event twice or skips one.
"""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

import duckdb
import msgspec
import pyarrow as pa
import structlog

from bus import Record
from projectors import patterns
from projectors.errors import ProjectorError
from projectors.fold import Changes, touched
from projectors.prices import Prices
from projectors.prices import load as load_prices
from projectors.rows import TABLES, PatternRow, ProjectRow, Row, RunRow
from schemas import InvalidMessage, Message, UnknownMessageType, decode_stored

log = structlog.get_logger(__name__)

R = TypeVar("R", bound=Row)
_ARROW_TYPES = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", "UTC"),
}

_BOOKKEEPING = (
    "CREATE TABLE IF NOT EXISTS checkpoint (id INTEGER PRIMARY KEY, last_seq BIGINT NOT NULL, "
    "events BIGINT NOT NULL, skipped BIGINT NOT NULL)",
    "INSERT INTO checkpoint VALUES (1, 0, 0, 0) ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS skipped (type VARCHAR PRIMARY KEY, count BIGINT NOT NULL, last_seq BIGINT)",
)
VIEWS = {
    "runs_by_status_day": "SELECT tenant, CAST(queued_at AS DATE) AS day, status, count(*) AS runs "
    "FROM runs GROUP BY ALL",
    "run_durations": "SELECT tenant, project_id, task_type, count(*) AS runs, "
    "quantile_cont(duration_ms, 0.5) AS p50_ms, quantile_cont(duration_ms, 0.95) AS p95_ms "
    "FROM runs WHERE duration_ms IS NOT NULL GROUP BY ALL",
    "usage_by_project_day": "SELECT tenant, project_id, CAST(queued_at AS DATE) AS day, count(*) AS runs, "
    "sum(tokens_in) AS tokens_in, sum(tokens_cached) AS tokens_cached, sum(tokens_out) AS tokens_out, "
    "sum(cost_usd) AS cost_usd FROM runs GROUP BY ALL",
    "failure_reasons": "SELECT tenant, failure_reason, count(*) AS runs FROM runs "
    "WHERE status = 'failed' GROUP BY ALL",
    "queue_waits": "SELECT tenant, project_id, count(*) AS runs, "
    "quantile_cont(queue_wait_ms, 0.5) AS p50_ms, quantile_cont(queue_wait_ms, 0.95) AS p95_ms, "
    "max(queue_wait_ms) AS max_ms FROM runs WHERE queue_wait_ms IS NOT NULL GROUP BY ALL",
    "pattern_stats": patterns.stats_view(patterns.MIN_RUNS),  # a store may set its own minimum
}


class LogGap(ProjectorError):
    """The records handed to the store skip a sequence: applying them would lose a message for good."""

    def __init__(self, expected: int, found: int) -> None:
        super().__init__(f"expected log sequence {expected}, got {found}")
        self.expected = expected
        self.found = found


class Store:
    """One DuckDB connection (the writer); readers take `cursor()`s of it."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        prices: Prices,
        path: Path | None = None,
        *,
        pattern_min_runs: int = patterns.MIN_RUNS,
    ) -> None:
        self._con = con
        self._prices = prices
        self.path = path
        self._views = VIEWS | {"pattern_stats": patterns.stats_view(pattern_min_runs)}
        self._patterns: _Recent[PatternRow] = _Recent(capacity=2_000)
        self._position: int | None = None  # the checkpoint once read: this connection is the only writer
        self._runs: _Recent[RunRow] = _Recent(capacity=20_000)
        self._projects: _Recent[ProjectRow] = _Recent(capacity=2_000)

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Another connection to the same database, for another thread; readers never block the writer."""
        cursor = self._con.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    def setup(self) -> None:
        self._con.execute("SET TimeZone = 'UTC'")
        for table in TABLES:
            self._con.execute(table.ddl())
        for statement in _BOOKKEEPING:
            self._con.execute(statement)
        for name, query in self._views.items():
            self._con.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")

    @property
    def last_seq(self) -> int:
        if self._position is None:
            row = self._con.execute("SELECT last_seq FROM checkpoint WHERE id = 1").fetchone()
            self._position = int(row[0]) if row else 0
        return self._position

    def apply(self, records: Sequence[Record]) -> int:
        """Fold `records` into the tables and move the checkpoint, all in one transaction."""
        start = self.last_seq
        fresh = records
        if records and records[0].seq <= start:  # a redelivered tail is ignored
            fresh = [record for record in records if record.seq > start]
        if not fresh:
            return start
        require_contiguous(start, fresh)
        return self._fold(fresh, fresh[-1].seq)

    def apply_share(self, records: Sequence[Record], through: int) -> int:
        """Fold one partition's records of a stretch of the log that ends at `through`, and move the
        checkpoint there (a parallel rebuild: its reader has checked the stretch is whole)."""
        if through <= self.last_seq:
            return self.last_seq
        return self._fold(records, through)

    def _fold(self, records: Sequence[Record], through: int) -> int:
        decoded, skipped = _decode(records)
        messages = [message for _, message in decoded]
        run_ids, project_ids, pattern_ids = touched(messages)
        runs = self._current(RunRow, run_ids, self._runs)
        projects = self._current(ProjectRow, project_ids, self._projects)
        known_patterns = self._current(PatternRow, pattern_ids, self._patterns)
        changes = Changes(runs, projects, self._prices, known_patterns)
        for seq, message_type in skipped:
            changes.skip(seq, message_type)
        for seq, message in decoded:
            changes.apply(seq, message)
        changes.settle()
        self._write(changes, runs.keys(), projects.keys(), through, known_patterns.keys())
        self._runs.remember(changes.runs)  # only once committed: the cache never runs ahead of the file
        self._projects.remember(changes.projects)
        self._patterns.remember(changes.patterns)
        self._position = through
        return self._position

    def _current(self, row_type: type[R], keys: set[str], recent: _Recent[R]) -> dict[str, R]:
        """The stored rows of `keys` (those that exist), from the cache where it has them."""
        rows, missing = recent.split(keys)
        rows.update(self._load(row_type, missing))
        return rows

    def _load(self, row_type: type[R], keys: set[str]) -> dict[str, R]:
        if not keys:
            return {}
        rows = self._con.execute(
            f"SELECT * FROM {row_type.TABLE} WHERE {row_type.KEY} IN (SELECT unnest($keys))",  # noqa: S608 - names are ours
            {"keys": sorted(keys)},
        ).fetchall()
        columns = row_type.columns()  # once: it introspects the Struct's annotations
        return {row[0]: row_type(**dict(zip(columns, row, strict=True))) for row in rows}

    def _write(
        self,
        changes: Changes,
        stored_runs: Collection[str],
        stored_projects: Collection[str],
        last_seq: int,
        stored_patterns: Collection[str] = (),
    ) -> None:
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            _replace(con, RunRow, changes.runs, stored_runs)
            _replace(con, ProjectRow, changes.projects, stored_projects)
            _replace(con, PatternRow, changes.patterns, stored_patterns)
            for table, rows in _by_table(changes.appended).items():
                _insert(con, table, rows)
            for message_type, count in changes.skipped.items():
                con.execute(
                    "INSERT INTO skipped VALUES ($type, $count, $seq) ON CONFLICT (type) DO UPDATE "
                    "SET count = skipped.count + excluded.count, last_seq = excluded.last_seq",
                    {"type": message_type, "count": count, "seq": changes.skipped_at[message_type]},
                )
            con.execute(
                "UPDATE checkpoint SET last_seq = $seq, events = events + $applied, "
                "skipped = skipped + $skipped WHERE id = 1",
                {"seq": last_seq, "applied": changes.applied, "skipped": changes.skipped.total()},
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def _replace(
    con: duckdb.DuckDBPyConnection, table: type[Row], rows: Mapping[str, Row], stored: Collection[str]
) -> None:
    """Write whole rows: delete the stored versions, append the new ones.

    An appender upsert gives the same table but is 2-7x slower, worse the larger the table
    (docs/performance.md, "Projection").
    """
    if not rows:
        return
    stale = [key for key in rows if key in stored]
    if stale:
        con.execute(
            f"DELETE FROM {table.TABLE} WHERE {table.KEY} IN (SELECT unnest($keys))",  # noqa: S608 - names are ours
            {"keys": stale},
        )
    _insert(con, table, list(rows.values()))


def _insert(con: duckdb.DuckDBPyConnection, table: type[Row], rows: Sequence[Row]) -> None:
    """Append `rows` as one Arrow batch: converted column by column in C, and scanned by DuckDB
    without holding the GIL (an appender converts value by value: ~10 µs per step row)."""
    schema = _schema(table)
    columns = zip(*map(msgspec.structs.astuple, rows), strict=True)
    arrays = [pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)]
    batch = pa.Table.from_arrays(arrays, schema=schema)
    con.from_arrow(batch).insert_into(table.TABLE)


def _by_table(rows: Iterable[Row]) -> dict[type[Row], list[Row]]:
    tables: dict[type[Row], list[Row]] = {}
    for row in rows:
        tables.setdefault(type(row), []).append(row)
    return tables


@functools.cache
def _schema(table: type[Row]) -> pa.Schema:
    return pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in table.column_types()])


class _Recent(Generic[R]):
    """The committed rows of the most recently written keys: most batches touch runs still in flight."""

    def __init__(self, capacity: int) -> None:
        self._rows: OrderedDict[str, R] = OrderedDict()
        self._capacity = capacity

    def split(self, keys: set[str]) -> tuple[dict[str, R], set[str]]:
        """The rows held for `keys`, and the keys it does not hold."""
        held = {key: self._rows[key] for key in keys if key in self._rows}
        return held, keys - held.keys()

    def remember(self, rows: Mapping[str, R]) -> None:
        for key, row in rows.items():
            self._rows[key] = row
            self._rows.move_to_end(key)
        while len(self._rows) > self._capacity:
            self._rows.popitem(last=False)


def require_contiguous(start: int, records: Sequence[Record]) -> None:
    """Refuse a gap rather than skip a message for good.

    The projector reads the whole log, where sequences have no holes; only an empty file may start
    past 1 (the log's head can age out).
    """
    if not records:
        return
    expected = start + 1 if start else records[0].seq
    seqs = [record.seq for record in records]
    if seqs == list(range(expected, expected + len(seqs))):
        return
    for seq in seqs:  # where the gap is
        if seq != expected:
            raise LogGap(expected, seq)
        expected += 1


def _decode(records: Sequence[Record]) -> tuple[list[tuple[int, Message]], list[tuple[int, str]]]:
    decoded: list[tuple[int, Message]] = []
    skipped: list[tuple[int, str]] = []
    for record in records:
        try:
            decoded.append((record.seq, decode_stored(record.data)))
        except UnknownMessageType as exc:
            skipped.append((record.seq, exc.tag))  # written by a newer version: counted, not fatal
        except InvalidMessage:
            log.warning("projector_invalid_message", seq=record.seq, subject=record.subject)
            skipped.append((record.seq, "invalid"))
    return decoded, skipped


@contextlib.contextmanager
def open_store(
    path: Path, prices: Prices | None = None, *, pattern_min_runs: int = patterns.MIN_RUNS
) -> Iterator[Store]:
    """Open (creating if needed) the DuckDB file at `path`; the only writer of that file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        store = Store(con, prices or load_prices(), path, pattern_min_runs=pattern_min_runs)
        store.setup()
        yield store
    finally:
        con.close()
