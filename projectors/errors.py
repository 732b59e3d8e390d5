"""The errors of the projectors.

ProjectorError
├── LogGap              records skip a sequence: applying them would lose a message (store.py)
├── NotComparable       two projections at different sequences cannot be compared (rebuild.py)
├── QueryError          a query answered with a typed failure (queries.py: bad_request, not_found, ...)
└── SqlError            analyst SQL did not produce a result
    ├── SqlRejected     the statement is not allowed (writes, files, settings, unknown tables, ...)
    ├── SqlTimeout      the query ran past its time limit and was interrupted
    └── SqlFailed       DuckDB refused or failed the query (syntax, unknown column, runtime error)
"""

from __future__ import annotations


class ProjectorError(Exception):
    """Root of every error raised by `projectors`."""


class SqlError(ProjectorError):
    """Root of the analyst SQL errors; the message is written for the analyst who sent the query."""


class SqlRejected(SqlError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SqlTimeout(SqlError):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"timeout: the query ran longer than {timeout_s:g} s and was stopped; "
            "narrow it with WHERE, LIMIT or smaller ranges"
        )
        self.timeout_s = timeout_s


class SqlFailed(SqlError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"the query failed: {detail}")
        self.detail = detail
