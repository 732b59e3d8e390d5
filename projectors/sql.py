"""Read-only analyst SQL over one tenant's read models, with a time limit and a row limit.

`run_sql` accepts exactly one SELECT and runs it only after these layers agree:

1. DuckDB's own parser classifies the text (`extract_statements`): one statement, of type SELECT.
2. The statement's syntax tree (`json_serialize_sql`) is walked: every table is an unqualified name of a
   read-model table or view (or a CTE in scope), table functions are limited to `TABLE_FUNCTIONS`, and a
   few scalar functions that read settings, variables or sleep are refused. File names in FROM (DuckDB's
   replacement scans), `read_csv`, `query()`, `duckdb_*()` and qualified names such as `main.runs` are
   therefore rejected before anything runs.
3. It runs on a fresh cursor where each allowed name is a TEMP VIEW over that tenant's rows only, and
   whose `search_path` is the temp schema alone, so no other table resolves even if step 2 missed one.
4. Extension auto-install and auto-load are switched off (database-wide), so no query (a cast to `INET`,
   say) can make DuckDB download anything.

A timer interrupts a query still running after `timeout_s`; at most `max_rows` rows are fetched.
External access is deliberately left on: DuckDB can only turn it off for the whole database, for good,
and the projector itself writes Parquet exports and snapshots (see `projectors.export`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from typing import Any, Literal

import duckdb
import msgspec

from projectors.errors import SqlFailed, SqlRejected, SqlTimeout
from projectors.rows import TABLES
from projectors.store import VIEWS, Store

Format = Literal["json", "csv"]

TENANT = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
RELATIONS: tuple[str, ...] = tuple(table.TABLE for table in TABLES) + tuple(VIEWS)
"""What an analyst may query: every read-model table and dashboard view (not the bookkeeping tables)."""
TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})
FORBIDDEN_FUNCTIONS = frozenset(
    {"current_setting", "getvariable", "sleep_ms", "pg_sleep", "write_log", "nextval", "setval", "currval"}
)
_TABLE_REFS = frozenset(
    {"BASE_TABLE", "TABLE_FUNCTION", "SHOW_REF", "JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST", "PIVOT"}
)
_FILES = "analyst SQL is read-only and cannot touch files"
_REASONS = {
    **dict.fromkeys(("COPY", "EXPORT", "IMPORT"), _FILES),
    **dict.fromkeys(("ATTACH", "DETACH", "USE"), "analyst SQL sees only your tenant's read models"),
    **dict.fromkeys(("INSTALL", "LOAD", "FORCE"), "analyst SQL cannot install or load extensions"),
    **dict.fromkeys(("PRAGMA", "SET", "RESET", "CALL"), "analyst SQL cannot read or change settings"),
    **dict.fromkeys(
        ("INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "DROP", "ALTER", "TRUNCATE", "COMMENT"),
        "analyst SQL is read-only",
    ),
}
_FILE_NAME = re.compile(r"[/\\:*?]|\.(csv|tsv|txt|json|jsonl|ndjson|parquet|arrow|db|duckdb|xlsx|gz)$", re.I)
_KEYWORD = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/|\()*([A-Za-z_]+)", re.DOTALL)


class Result(msgspec.Struct, frozen=True, kw_only=True):
    """A query's answer: `rows` as JSON-ready lists (fmt json) or `csv` text with a header (fmt csv)."""

    columns: list[str]
    rows: list[list[Any]] = []
    csv: str | None = None
    truncated: bool = False  # more than max_rows rows matched; only the first max_rows are here
    elapsed_ms: float = 0.0


def run_sql(
    source: Store | duckdb.DuckDBPyConnection,
    tenant: str,
    sql: str,
    *,
    max_rows: int = 10_000,
    timeout_s: float = 10.0,
    fmt: Format = "json",
) -> Result:
    """Run one read-only SELECT over `tenant`'s rows of the read models in `source`'s database.

    Raises `SqlRejected` for a statement that is not allowed, `SqlTimeout` when it runs past `timeout_s`
    and `SqlFailed` when DuckDB cannot run it; `ValueError` for a malformed tenant or limit.
    Blocks the calling thread: async callers run it with `asyncio.to_thread`.
    """
    if not TENANT.fullmatch(tenant):
        raise ValueError(f"not a tenant id: {tenant!r}")
    if max_rows < 1 or timeout_s <= 0:
        raise ValueError("max_rows and timeout_s must be positive")
    cursor = source.cursor()
    try:
        statement = check(cursor, sql)
        _confine(cursor, tenant)
        started = time.perf_counter()
        columns, rows = _execute(cursor, statement, max_rows + 1, timeout_s)
        elapsed_ms = (time.perf_counter() - started) * 1000
    finally:
        cursor.close()
    return _result(columns, rows[:max_rows], len(rows) > max_rows, elapsed_ms, fmt)


def check(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement:
    """The single SELECT statement in `sql`, or `SqlRejected` saying why it is not allowed."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.ParserException as exc:
        raise SqlFailed(str(exc)) from exc
    if len(statements) != 1:
        raise SqlRejected(f"exactly one statement is allowed, found {len(statements)}")
    statement = statements[0]
    try:
        select = statement.type == duckdb.StatementType.SELECT
    except ValueError:  # a type the Python binding cannot name (UPDATE EXTENSIONS): not a SELECT either
        select = False
    if not select:
        raise SqlRejected(_refusal(statement.query))
    _walk(_syntax_tree(con, statement.query))
    return statement


def _refusal(text: str) -> str:
    match = _KEYWORD.match(text)
    keyword = match.group(1).upper() if match else "this statement"
    return f"{keyword} is not allowed: " + _REASONS.get(keyword, "only a single SELECT query is accepted")


def _syntax_tree(con: duckdb.DuckDBPyConnection, query: str) -> Any:
    row = con.execute("SELECT json_serialize_sql($query)", {"query": query}).fetchone()
    try:
        tree: dict[str, Any] = json.loads(row[0]) if row else {"error": True}
    except RecursionError as exc:
        raise SqlRejected("the query is nested too deeply for analyst SQL; flatten it with CTEs") from exc
    statements = tree.get("statements") or []
    if tree.get("error") or len(statements) != 1:
        raise SqlRejected("analyst SQL cannot check this construct; write it as a plain SELECT")
    return statements[0]


def _walk(tree: Any) -> None:
    """Check every table reference and function call in a syntax tree (iteratively: trees can be deep)."""
    stack: list[tuple[Any, frozenset[str]]] = [(tree, frozenset())]
    while stack:
        node, ctes = stack.pop()
        if isinstance(node, list):
            stack.extend((item, ctes) for item in node)
        elif isinstance(node, dict):
            stack.extend(_visit(node, ctes))


def _visit(node: dict[str, Any], ctes: frozenset[str]) -> list[tuple[Any, frozenset[str]]]:
    """Check one node; its children, each with the CTE names in scope there."""
    children = []
    # A CTE sees the CTEs defined before it (and itself when recursive), never the ones after it.
    for entry in node["cte_map"]["map"] if "cte_map" in node else ():
        name = entry["key"].lower()
        recursive = entry["value"]["query_node"].get("type") == "RECURSIVE_CTE_NODE"
        children.append((entry["value"], ctes | {name} if recursive else ctes))
        ctes = ctes | {name}
    if node.get("class") == "FUNCTION":
        _check_function(node)
    elif "class" not in node and "query_location" in node and "sample" in node:
        _check_ref(node, ctes)
    children.extend((value, ctes) for key, value in node.items() if key != "cte_map")
    return children


def _check_ref(ref: dict[str, Any], ctes: frozenset[str]) -> None:
    kind = ref.get("type")
    if kind not in _TABLE_REFS:
        raise SqlRejected(f"{kind} is not supported in analyst SQL")
    if kind == "BASE_TABLE":
        _check_table(ref, ctes)
    elif kind == "TABLE_FUNCTION":
        name = str(ref.get("function", {}).get("function_name", "")).lower()
        if name not in TABLE_FUNCTIONS:
            raise SqlRejected(
                f"{name}() is not allowed: analyst SQL cannot read files, URLs or the catalog; "
                f"the table functions you can use are {', '.join(sorted(TABLE_FUNCTIONS))}"
            )
    elif kind == "SHOW_REF" and ref.get("query") is None:
        raise SqlRejected(f"SHOW is not allowed: the tables you can query are {', '.join(RELATIONS)}")


def _check_table(ref: dict[str, Any], ctes: frozenset[str]) -> None:
    name = str(ref["table_name"])
    if ref.get("catalog_name") or ref.get("schema_name"):
        path = ".".join(part for part in (ref.get("catalog_name"), ref.get("schema_name"), name) if part)
        raise SqlRejected(f"{path} is not allowed: name tables without a database or schema, e.g. runs")
    if name.lower() in ctes or name.lower() in RELATIONS:
        return
    if _FILE_NAME.search(name):
        raise SqlRejected(f"reading {name!r} is not allowed: {_FILES}")
    raise SqlRejected(f"there is no table {name!r}: the tables you can query are {', '.join(RELATIONS)}")


def _check_function(call: dict[str, Any]) -> None:
    name = str(call.get("function_name", "")).lower()
    if call.get("catalog") or call.get("schema"):
        qualified = f"{call.get('schema') or call.get('catalog')}.{name}"
        raise SqlRejected(f"{qualified}() is not allowed: call functions by their plain name")
    if name in FORBIDDEN_FUNCTIONS:
        raise SqlRejected(f"{name}() is not allowed in analyst SQL")


def _confine(cursor: duckdb.DuckDBPyConnection, tenant: str) -> None:
    """Make every allowed name on this cursor a view of `tenant`'s rows, and nothing else resolvable."""
    row = cursor.execute("SELECT current_database()").fetchone()
    catalog = '"' + str(row[0] if row else "main").replace('"', '""') + '"'
    views = "".join(
        f"CREATE TEMP VIEW {name} AS SELECT * FROM {catalog}.main.{name} WHERE tenant = '{tenant}';"  # noqa: S608
        for name in RELATIONS
    )  # the tenant matched TENANT above, so it cannot close the string literal
    cursor.execute(
        "SET TimeZone = 'UTC'; SET autoinstall_known_extensions = false; "
        f"SET autoload_known_extensions = false; {views} SET search_path = 'temp.main';"
    )


def _execute(
    cursor: duckdb.DuckDBPyConnection, statement: duckdb.Statement, limit: int, timeout_s: float
) -> tuple[list[str], list[tuple[Any, ...]]]:
    timer = threading.Timer(timeout_s, cursor.interrupt)
    timer.start()
    try:
        cursor.execute(statement)
        columns = [column[0] for column in cursor.description]
        return columns, cursor.fetchmany(limit)
    except duckdb.InterruptException as exc:
        raise SqlTimeout(timeout_s) from exc
    except duckdb.Error as exc:
        raise SqlFailed(str(exc)) from exc
    finally:
        timer.cancel()


def _result(
    columns: list[str], rows: list[tuple[Any, ...]], truncated: bool, elapsed_ms: float, fmt: Format
) -> Result:
    values: list[list[Any]] = msgspec.to_builtins([list(row) for row in rows], enc_hook=str)
    if fmt == "json":
        return Result(columns=columns, rows=values, truncated=truncated, elapsed_ms=elapsed_ms)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(columns)
    writer.writerows([_csv_cell(value) for value in row] for row in values)
    return Result(columns=columns, csv=text.getvalue(), truncated=truncated, elapsed_ms=elapsed_ms)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)
