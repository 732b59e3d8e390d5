"""The read-model tables, each defined once as a Struct: the DDL and the row tuples come from it.

Column order is field order. Every table carries `tenant`, and every row the stream sequence that last
touched it, so any row can be traced back to the log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import msgspec

_SQL_TYPES = {str: "VARCHAR", int: "BIGINT", float: "DOUBLE", bool: "BOOLEAN", datetime: "TIMESTAMPTZ"}


class Row(msgspec.Struct, kw_only=True, gc=False):
    """A table row; subclasses name their table and primary key.

    Rows hold plain values and never take part in a reference cycle, so the garbage collector need not
    track them (`gc=False`): a batch makes thousands, and tracking them made collections walk them all.
    """

    TABLE: ClassVar[str]
    KEY: ClassVar[str]

    @classmethod
    def ddl(cls) -> str:
        columns = []
        for name, kind in cls.column_types():
            primary = " PRIMARY KEY" if name == cls.KEY else ""
            columns.append(f"{name} {_SQL_TYPES[kind]}{primary}")
        return f"CREATE TABLE IF NOT EXISTS {cls.TABLE} ({', '.join(columns)})"

    @classmethod
    def column_types(cls) -> list[tuple[str, type]]:
        """Each column's name and Python type (`X | None` counts as `X`), in table order."""
        fields = msgspec.structs.fields(cls)
        return [(f.name, f.type.__args__[0] if hasattr(f.type, "__args__") else f.type) for f in fields]

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(field.name for field in msgspec.structs.fields(cls))

    def astuple(self) -> tuple[Any, ...]:
        return msgspec.structs.astuple(self)


class ProjectRow(Row, kw_only=True):
    TABLE: ClassVar[str] = "projects"
    KEY: ClassVar[str] = "project_id"

    project_id: str
    tenant: str
    name: str | None = None
    status: str = "active"
    source_kind: str | None = None
    source: str | None = None  # the path or URL (with its git ref after a space)
    description: str | None = None
    default_task_type: str | None = None
    created_by: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    archived_at: datetime | None = None
    version: int = 0
    last_seq: int = 0


class RunRow(Row, kw_only=True):
    TABLE: ClassVar[str] = "runs"
    KEY: ClassVar[str] = "run_id"

    run_id: str
    tenant: str
    project_id: str | None = None
    task_type: str | None = None
    status: str = "queued"
    instructions: str | None = None
    requested_by: str | None = None
    reference_run_id: str | None = None
    from_run_id: str | None = None
    attempt: int = 0
    executor_id: str | None = None
    sandbox: str | None = None
    codex_version: str | None = None
    model: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue_wait_ms: int | None = None
    duration_ms: int | None = None
    tokens_in: int = 0
    tokens_cached: int = 0
    tokens_out: int = 0
    tokens_reasoning: int = 0
    cost_usd: float = 0.0
    steps: int = 0
    commands_run: int = 0
    files_changed: int = 0
    plan_done: int = 0
    plan_total: int = 0
    progress_pct: float = 0.0
    warnings: int = 0
    quarantined: int = 0
    failure_reason: str | None = None
    failure_detail: str | None = None
    failure_suggestion: str | None = None
    cancelled_by: str | None = None
    timeout_limit: str | None = None
    summary: str | None = None  # JSON of the run.succeeded summary
    final_message: str | None = None
    events: int = 0
    last_seq: int = 0


class StepRow(Row, kw_only=True):
    TABLE: ClassVar[str] = "steps"
    KEY: ClassVar[str] = "seq"

    seq: int
    tenant: str
    run_id: str
    item_id: str
    kind: str
    summary: str
    status: str | None = None
    exit_code: int | None = None
    ref_sha256: str | None = None
    occurred_at: datetime | None = None


class ModelCallRow(Row, kw_only=True):
    TABLE: ClassVar[str] = "model_calls"
    KEY: ClassVar[str] = "seq"

    seq: int
    tenant: str
    run_id: str
    model: str
    status: int
    latency_ms: int
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0
    cost_usd: float = 0.0
    request_sha256: str | None = None
    response_sha256: str | None = None
    occurred_at: datetime | None = None


class ArtifactRow(Row, kw_only=True):
    TABLE: ClassVar[str] = "artifacts"
    KEY: ClassVar[str] = "seq"

    seq: int
    tenant: str
    run_id: str
    name: str
    kind: str
    sha256: str
    size: int
    media_type: str
    occurred_at: datetime | None = None


class CommandRow(Row, kw_only=True):
    """The audit index: who asked for what, when, from where."""

    TABLE: ClassVar[str] = "commands"
    KEY: ClassVar[str] = "seq"

    seq: int
    tenant: str
    command_id: str
    type: str
    aggregate: str
    aggregate_id: str
    actor: str
    origin: str | None = None
    issued_at: datetime | None = None


class PatternRow(Row, kw_only=True):
    TABLE: ClassVar[str] = "patterns"
    KEY: ClassVar[str] = "pattern_id"

    pattern_id: str
    tenant: str
    project_id: str | None = None
    task_type: str | None = None
    name: str | None = None
    summary: str | None = None
    version: int = 0
    status: str = "active"
    source_run_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_seq: int = 0
    goal: str | None = None
    steps: str | None = None  # JSON list of the current version's steps
    variables: str | None = None  # JSON list of its variables
    content_hash: str | None = None
    refinement: str | None = None  # none, model or fallback
    refinement_detail: str | None = None
    extractor_version: str | None = None
    source_first_seq: int | None = None
    source_last_seq: int | None = None
    created_by: str | None = None
    retired_at: datetime | None = None


class PatternUseRow(Row, kw_only=True):
    """One pattern version applied to one run (a `pattern.applied` event can list several)."""

    TABLE: ClassVar[str] = "pattern_uses"
    KEY: ClassVar[str] = "use_id"

    use_id: str  # `<seq>.<index in the event>`
    seq: int
    tenant: str
    pattern_id: str
    version: int
    run_id: str
    selected_by: str | None = None
    score: float | None = None
    occurred_at: datetime | None = None


class PatternVersionRow(Row, kw_only=True):
    """Every version of every pattern, the first (extracted) and each edit."""

    TABLE: ClassVar[str] = "pattern_versions"
    KEY: ClassVar[str] = "seq"

    seq: int
    tenant: str
    pattern_id: str
    version: int
    name: str
    summary: str
    steps: str  # JSON
    variables: str  # JSON
    content_hash: str
    created_by: str
    created_at: datetime | None = None


TABLES: tuple[type[Row], ...] = (
    ProjectRow,
    RunRow,
    StepRow,
    ModelCallRow,
    ArtifactRow,
    CommandRow,
    PatternRow,
    PatternUseRow,
    PatternVersionRow,
)
