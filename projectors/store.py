"""The DuckDB file a projector owns: read models plus the log position they reflect, moved together.

Every batch is applied in one transaction that also stores the last applied stream sequence, so a crash
leaves the file exactly at some batch boundary: restarting from the stored sequence never applies an
event twice or skips one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import duckdb
import structlog

from bus import Record
from projectors.fold import Changes, touched
from projectors.prices import Prices
from projectors.prices import load as load_prices
from projectors.rows import TABLES, ProjectRow, Row, RunRow
from schemas import InvalidMessage, Message, UnknownMessageType, decode

log = structlog.get_logger(__name__)

R = TypeVar("R", bound=Row)

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
}


class Store:
    """One DuckDB connection (the writer); readers take `cursor()`s of it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, prices: Prices) -> None:
        self._con = con
        self._prices = prices

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
        for name, query in VIEWS.items():
            self._con.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")

    @property
    def last_seq(self) -> int:
        row = self._con.execute("SELECT last_seq FROM checkpoint WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def apply(self, records: Sequence[Record]) -> int:
        """Fold `records` into the tables and move the checkpoint, all in one transaction."""
        start = self.last_seq
        fresh = [record for record in records if record.seq > start]  # a redelivered tail is ignored
        if not fresh:
            return start
        decoded, skipped = _decode(fresh)
        run_ids, project_ids = touched(message for _, message in decoded)
        changes = Changes(self._load(RunRow, run_ids), self._load(ProjectRow, project_ids), self._prices)
        for message_type in skipped:
            changes.skip(message_type)
        for seq, message in decoded:
            changes.apply(seq, message)
        self._write(changes, fresh[-1].seq)
        return fresh[-1].seq

    def _load(self, row_type: type[R], keys: set[str]) -> dict[str, R]:
        if not keys:
            return {}
        rows = self._con.execute(
            f"SELECT * FROM {row_type.TABLE} WHERE {row_type.KEY} IN (SELECT unnest($keys))",  # noqa: S608 - names are ours
            {"keys": sorted(keys)},
        ).fetchall()
        return {row[0]: row_type(**dict(zip(row_type.columns(), row, strict=True))) for row in rows}

    def _write(self, changes: Changes, last_seq: int) -> None:
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            _upsert(con, RunRow, changes.runs.values())
            _upsert(con, ProjectRow, changes.projects.values())
            for table in {type(row) for row in changes.appended}:
                appender = con.appender(table.TABLE)
                appender.append_rows([row.astuple() for row in changes.appended if type(row) is table])
                appender.flush()
            for message_type, count in changes.skipped.items():
                con.execute(
                    "INSERT INTO skipped VALUES ($type, $count, $seq) ON CONFLICT (type) DO UPDATE "
                    "SET count = skipped.count + excluded.count, last_seq = excluded.last_seq",
                    {"type": message_type, "count": count, "seq": last_seq},
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


def _upsert(con: duckdb.DuckDBPyConnection, table: type[Row], rows: Iterable[Row]) -> None:
    tuples = [row.astuple() for row in rows]
    if tuples:
        appender = con.appender(table.TABLE, action="upsert")
        appender.append_rows(tuples)
        appender.flush()


def _decode(records: Sequence[Record]) -> tuple[list[tuple[int, Message]], list[str]]:
    decoded: list[tuple[int, Message]] = []
    skipped: list[str] = []
    for record in records:
        try:
            decoded.append((record.seq, decode(record.data)))
        except UnknownMessageType as exc:
            skipped.append(exc.tag)  # written by a newer version: counted, not fatal
        except InvalidMessage:
            log.warning("projector_invalid_message", seq=record.seq, subject=record.subject)
            skipped.append("invalid")
    return decoded, skipped


@contextlib.contextmanager
def open_store(path: Path, prices: Prices | None = None) -> Iterator[Store]:
    """Open (creating if needed) the DuckDB file at `path`; the only writer of that file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        store = Store(con, prices or load_prices())
        store.setup()
        yield store
    finally:
        con.close()
