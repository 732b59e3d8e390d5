"""Analyst SQL: one tenant's rows only, read-only, no files or network, bounded in time and rows."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import msgspec
import pytest

from projectors.errors import ProjectorError, SqlFailed, SqlRejected, SqlTimeout
from projectors.sql import RELATIONS, Format, _confine, run_sql
from projectors.store import Store, open_store
from tests.projectors._sample import TENANTS, workload
from tests.projectors._support import appended

RUNAWAY = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One store for the read-only tests of this module; tests that write use `own_store`."""
    with open_store(tmp_path_factory.mktemp("sql") / "store.duckdb") as store:
        store.apply(workload(TENANTS, runs=3))
        yield store


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.duckdb") as store:
        store.apply(workload(TENANTS, runs=3))
        yield store


def _count(store: Store, relation: str, tenant: str) -> int:
    query = f"SELECT count(*) FROM {relation} WHERE tenant = $tenant"  # noqa: S608 - names are ours
    row = store.connection.execute(query, {"tenant": tenant}).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize("tenant", TENANTS)
def test_every_table_and_view_shows_only_the_callers_rows(store: Store, tenant: str, relation: str) -> None:
    """Each read-model table and view returns exactly the caller tenant's rows, never another tenant's."""
    result = run_sql(store, tenant, f"SELECT tenant FROM {relation}")  # noqa: S608

    assert {row[0] for row in result.rows} <= {tenant}
    assert len(result.rows) == _count(store, relation, tenant)


def test_both_tenants_have_data_to_leak(store: Store) -> None:
    """The fixture holds runs, steps and dashboard rows of both tenants, so scoping is really tested."""
    for relation in ("runs", "steps", "model_calls", "commands", "usage_by_project_day"):
        assert all(_count(store, relation, tenant) > 0 for tenant in TENANTS)


def test_joins_subqueries_and_ctes_stay_within_the_tenant(store: Store) -> None:
    """Joins, scalar subqueries, CTEs and set operations all read the tenant-scoped relations."""
    sql = (
        "WITH mine AS (SELECT run_id FROM runs) "
        "SELECT (SELECT count(*) FROM steps) AS steps, count(DISTINCT s.run_id) AS runs, "
        "(SELECT count(*) FROM (SELECT tenant FROM commands UNION ALL SELECT tenant FROM projects)) AS other "
        "FROM mine JOIN steps s USING (run_id)"
    )
    result = run_sql(store, "acme", sql)

    steps, commands, projects = (_count(store, name, "acme") for name in ("steps", "commands", "projects"))
    assert result.columns == ["steps", "runs", "other"]
    assert result.rows == [[steps, _count(store, "runs", "acme"), commands + projects]]


def test_json_rows_are_ready_to_encode(store: Store) -> None:
    """JSON results carry column names and JSON-native values (times as RFC 3339 text)."""
    result = run_sql(store, "acme", "SELECT run_id, status, queued_at, cost_usd FROM runs ORDER BY run_id")

    assert result.columns == ["run_id", "status", "queued_at", "cost_usd"]
    assert result.csv is None
    assert not result.truncated
    assert result.elapsed_ms >= 0
    assert [row[2].endswith("Z") for row in result.rows] == [True] * 3
    assert msgspec.json.decode(msgspec.json.encode(result))["rows"] == result.rows


def test_csv_output_has_a_header_and_one_line_per_row(store: Store) -> None:
    """CSV results are RFC 4180 text with a header, empty cells for NULL and JSON for nested values."""
    sql = "SELECT status, failure_reason, [1, 2] AS pair FROM runs ORDER BY status"
    result = run_sql(store, "acme", sql, fmt="csv")

    assert result.csv is not None
    assert result.rows == []
    lines = list(csv.reader(io.StringIO(result.csv)))
    assert lines == [
        ["status", "failure_reason", "pair"],
        ["failed", "nonzero_exit", "[1, 2]"],
        ["succeeded", "", "[1, 2]"],
        ["succeeded", "", "[1, 2]"],
    ]


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_row_limit_truncates(store: Store, fmt: Format) -> None:
    """At most max_rows rows come back, and `truncated` says whether more matched."""
    cut = run_sql(store, "acme", "SELECT * FROM range(100)", max_rows=10, fmt=fmt)
    whole = run_sql(store, "acme", "SELECT * FROM range(100)", max_rows=100, fmt=fmt)

    assert cut.truncated
    assert not whole.truncated
    if fmt == "json":
        assert cut.rows == [[n] for n in range(10)]
        assert len(whole.rows) == 100
    else:
        assert cut.csv is not None
        assert cut.csv.splitlines() == ["range", *map(str, range(10))]


def test_a_huge_result_is_not_materialised(store: Store) -> None:
    """Rows are streamed: a billion-row SELECT with a small row limit answers at once."""
    result = run_sql(store, "acme", "SELECT * FROM range(1000000000)", max_rows=5, timeout_s=5)

    assert result.rows == [[n] for n in range(5)]
    assert result.truncated


REJECTED = [
    ("COPY runs TO '/tmp/x.csv'", "COPY is not allowed: analyst SQL is read-only and cannot touch files"),
    ("ATTACH '/tmp/x.db'", "ATTACH is not allowed"),
    ("ATTACH '/tmp/x.db' AS x (READ_ONLY)", "ATTACH is not allowed"),
    ("DETACH x", "DETACH is not allowed"),
    ("INSTALL httpfs", "INSTALL is not allowed: analyst SQL cannot install or load extensions"),
    ("LOAD httpfs", "LOAD is not allowed"),
    ("FORCE INSTALL httpfs", "FORCE is not allowed"),
    ("UPDATE EXTENSIONS", "UPDATE is not allowed"),
    ("EXPORT DATABASE '/tmp/x'", "EXPORT is not allowed: analyst SQL is read-only and cannot touch files"),
    ("IMPORT DATABASE '/tmp/x'", "IMPORT is not allowed"),
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv() is not allowed: analyst SQL cannot read files"),
    ("SELECT * FROM read_text('/etc/passwd')", "read_text() is not allowed"),
    ("SELECT * FROM read_parquet('x.parquet')", "read_parquet() is not allowed"),
    ("SELECT * FROM glob('/*')", "glob() is not allowed"),
    ("SELECT * FROM '/etc/passwd'", "reading '/etc/passwd' is not allowed"),
    ("SELECT * FROM 'runs.csv'", "reading 'runs.csv' is not allowed"),
    ("SELECT * FROM 'https://example.com/x.parquet'", "is not allowed: analyst SQL is read-only and cannot"),
    ("SELECT * FROM main.runs", "main.runs is not allowed: name tables without a database or schema"),
    ("SELECT * FROM store.main.runs", "store.main.runs is not allowed"),
    ("SELECT * FROM memory.main.runs", "memory.main.runs is not allowed"),
    ('SELECT * FROM "store"."runs"', "store.runs is not allowed"),
    ("SELECT * FROM temp.main.runs", "temp.main.runs is not allowed"),
    ("SELECT 1 FROM runs WHERE EXISTS (SELECT 1 FROM main.steps)", "main.steps is not allowed"),
    ("SELECT * FROM query('SELECT * FROM store.main.runs')", "query() is not allowed"),
    ("SELECT * FROM duckdb_tables()", "duckdb_tables() is not allowed"),
    ("SELECT * FROM pragma_table_info('runs')", "pragma_table_info() is not allowed"),
    ("SELECT current_setting('threads')", "current_setting() is not allowed"),
    ("SELECT getvariable('x')", "getvariable() is not allowed"),
    ("SELECT main.abs(1)", "main.abs() is not allowed"),
    (
        "INSERT INTO runs (run_id, tenant) VALUES ('x', 'acme')",
        "INSERT is not allowed: analyst SQL is read-only",
    ),
    ("UPDATE runs SET status = 'x'", "UPDATE is not allowed"),
    ("DELETE FROM runs", "DELETE is not allowed"),
    ("CREATE TABLE x AS SELECT 1", "CREATE is not allowed"),
    ("CREATE TEMP VIEW x AS SELECT 1", "CREATE is not allowed"),
    ("DROP TABLE runs", "DROP is not allowed"),
    ("ALTER TABLE runs ADD COLUMN x INT", "ALTER is not allowed"),
    ("PRAGMA database_list", "PRAGMA is not allowed: analyst SQL cannot read or change settings"),
    ("SET enable_external_access = true", "SET is not allowed"),
    ("RESET threads", "RESET is not allowed"),
    ("CALL pragma_version()", "CALL is not allowed"),
    ("BEGIN TRANSACTION", "BEGIN is not allowed: only a single SELECT query is accepted"),
    ("EXPLAIN ANALYZE SELECT 1", "EXPLAIN is not allowed"),
    ("SELECT 1; SELECT 2", "exactly one statement is allowed, found 2"),
    ("SELECT 1; DROP TABLE runs", "exactly one statement is allowed, found 2"),
    ("", "exactly one statement is allowed, found 0"),
    ("/* note */ -- line\n copy runs to 'x.csv'", "COPY is not allowed"),
    ("SHOW ALL TABLES", "SHOW is not allowed"),
    ("SELECT * FROM checkpoint", "there is no table 'checkpoint'"),
    ("SELECT * FROM skipped", "there is no table 'skipped'"),
    ("SELECT " + "+".join(["1"] * 900), "nested too deeply"),
]


@pytest.mark.parametrize(("sql", "reason"), REJECTED)
def test_forbidden_statements_are_rejected_with_a_reason(store: Store, sql: str, reason: str) -> None:
    """Each forbidden statement is refused before it runs, with a reason the analyst can act on."""
    with pytest.raises(SqlRejected) as caught:
        run_sql(store, "acme", sql)

    assert reason in caught.value.reason
    assert isinstance(caught.value, ProjectorError)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM (WITH checkpoint AS (SELECT 1) SELECT 1), checkpoint",
        "WITH a AS (SELECT * FROM checkpoint), checkpoint AS (SELECT 1 AS x) SELECT * FROM a",
        "WITH RECURSIVE a AS (SELECT * FROM checkpoint), checkpoint AS (SELECT 1 AS x) SELECT * FROM a",
    ],
)
def test_a_cte_name_out_of_scope_does_not_unlock_a_table(store: Store, sql: str) -> None:
    """A CTE name counts only where DuckDB binds it, so it cannot smuggle in a hidden table."""
    with pytest.raises(SqlRejected, match="there is no table 'checkpoint'"):
        run_sql(store, "acme", sql)


def test_ctes_may_shadow_read_model_names(store: Store) -> None:
    """A CTE named like a table, or like a hidden table, is just that CTE."""
    shadow = run_sql(store, "acme", "WITH runs AS (SELECT * FROM runs WHERE status = 'failed') FROM runs")
    hidden = run_sql(store, "acme", "WITH checkpoint AS (SELECT 7 AS last_seq) SELECT * FROM checkpoint")

    assert [row[1] for row in shadow.rows] == ["acme"]
    assert hidden.rows == [[7]]


def test_read_only_conveniences_are_allowed(store: Store) -> None:
    """DESCRIBE, SUMMARIZE, VALUES, FROM-first, PIVOT and harmless table functions work."""
    for sql in (
        "DESCRIBE runs",
        "SUMMARIZE steps",
        "VALUES (1), (2)",
        "FROM runs SELECT count(*)",
        "SELECT * FROM runs PIVOT (count(*) FOR status IN ('failed'))",
        "SELECT * FROM generate_series(1, 3), unnest([1, 2])",
        "SELECT count(*) FROM runs USING SAMPLE 50%",
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x UNION ALL SELECT a FROM x",
    ):
        assert run_sql(store, "acme", sql).columns


def test_the_confined_cursor_resolves_nothing_else(store: Store) -> None:
    """Behind the syntax check, the cursor itself sees only the tenant views: hidden tables do not resolve."""
    cursor = store.cursor()
    try:
        _confine(cursor, "acme")
        runs = cursor.execute("SELECT DISTINCT tenant FROM runs").fetchall()
        main_runs = cursor.execute("SELECT DISTINCT tenant FROM main.runs").fetchall()
        with pytest.raises(duckdb.CatalogException):
            cursor.execute("SELECT * FROM checkpoint")
    finally:
        cursor.close()

    assert runs == main_runs == [("acme",)]
    assert store.connection.execute("SELECT count(*) FROM checkpoint").fetchall() == [(1,)]


def test_extensions_are_never_downloaded(store: Store) -> None:
    """A type from an uninstalled extension fails at once instead of triggering a download."""
    with pytest.raises(SqlFailed, match="inet") as caught:
        run_sql(store, "acme", "SELECT '10.0.0.1'::INET")

    assert "download" not in caught.value.detail.lower()
    settings = store.connection.execute(
        "SELECT current_setting('autoinstall_known_extensions'), current_setting('autoload_known_extensions')"
    ).fetchall()
    assert settings == [(False, False)]


def test_a_runaway_query_is_stopped_by_the_time_limit(own_store: Store) -> None:
    """A huge cross join is interrupted near the time limit, and the writer keeps applying meanwhile."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        query = pool.submit(run_sql, own_store, "acme", RUNAWAY, timeout_s=1.0)
        applied = own_store.apply(appended(own_store, workload(("acme",), runs=1, seed=99)))
        error = query.exception(timeout=10)
        elapsed = time.monotonic() - started

    assert isinstance(error, SqlTimeout)
    assert "timeout" in str(error)
    assert error.timeout_s == 1.0
    assert elapsed < 1.0 + 2.0
    assert applied == own_store.last_seq
    assert run_sql(own_store, "acme", "SELECT count(*) FROM runs").rows == [[4]]


def test_errors_from_duckdb_are_reported_as_failures(store: Store) -> None:
    """Syntax errors and unknown columns come back as SqlFailed with DuckDB's explanation."""
    with pytest.raises(SqlFailed, match="syntax error"):
        run_sql(store, "acme", "SELECT * FROM runs WHERE")
    with pytest.raises(SqlFailed, match="nosuchcol"):
        run_sql(store, "acme", "SELECT nosuchcol FROM runs")


@pytest.mark.parametrize("tenant", ["", "Acme", "acme'; DROP TABLE runs; --", "a", "-acme", "acme-"])
def test_a_malformed_tenant_never_reaches_sql(store: Store, tenant: str) -> None:
    """A tenant that is not a valid tenant id is refused before any SQL is built."""
    with pytest.raises(ValueError, match="not a tenant id"):
        run_sql(store, tenant, "SELECT 1")


def test_a_plain_read_only_connection_works_too(tmp_path: Path) -> None:
    """run_sql also serves a DuckDB file opened read-only, e.g. an analyst replica."""
    path = tmp_path / "replica.duckdb"
    with open_store(path) as store:
        store.apply(workload(TENANTS, runs=2))
    with duckdb.connect(str(path), read_only=True) as con:
        result = run_sql(con, "globex", "SELECT DISTINCT tenant FROM runs")

    assert result.rows == [["globex"]]
