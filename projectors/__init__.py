"""DuckDB read models folded from the log, checkpointed atomically and queried over NATS.

The only package that imports `duckdb`.
"""

from projectors.errors import ProjectorError, SqlError, SqlFailed, SqlRejected, SqlTimeout
from projectors.export import export_parquet, read_manifest, snapshot
from projectors.projector import Projector
from projectors.rebuild import Drift, check, checksums, compare, rebuild
from projectors.settings import Settings
from projectors.sql import Result, run_sql
from projectors.store import LogGap, Store, open_store

__all__ = [
    "Drift",
    "LogGap",
    "Projector",
    "ProjectorError",
    "Result",
    "Settings",
    "SqlError",
    "SqlFailed",
    "SqlRejected",
    "SqlTimeout",
    "Store",
    "check",
    "checksums",
    "compare",
    "export_parquet",
    "open_store",
    "read_manifest",
    "rebuild",
    "run_sql",
    "snapshot",
]
