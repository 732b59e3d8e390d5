"""DuckDB read models folded from the log, checkpointed atomically and queried over NATS.

The only package that imports `duckdb`.
"""
