"""What a batch of log records does to the read models, computed in memory without touching DuckDB.

Unlike the pure lifecycle rules in `schemas`, a projection never refuses an event: it records what the
log says happened. Runs and projects are upserted whole; steps, model calls, artifacts, commands and
pattern uses are appended, keyed by stream sequence.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import assert_never

import msgspec

from projectors import patterns
from projectors.prices import Prices
from projectors.rows import (
    ArtifactRow,
    CommandRow,
    ModelCallRow,
    PatternRow,
    ProjectRow,
    Row,
    RunRow,
    StepRow,
)
from schemas import (
    AgentMessage,
    AnyCommand,
    ArchiveProject,
    ArtifactStored,
    CancelRun,
    CodexNotice,
    CommandExecuted,
    CommandStarted,
    CreateKey,
    CreateProject,
    EditPattern,
    ExtractPattern,
    FilesChanged,
    GitSource,
    KeyCreated,
    KeyRevoked,
    LimitWarning,
    LineQuarantined,
    LocalSource,
    Message,
    ModelCallRecorded,
    PatternApplied,
    PatternEdited,
    PatternExtracted,
    PatternRestored,
    PatternRetired,
    PlanUpdated,
    ProjectArchived,
    ProjectCreated,
    ProjectUpdated,
    Reasoning,
    RestorePattern,
    RetirePattern,
    RevokeKey,
    RunCancelled,
    RunFailed,
    RunStarted,
    RunSucceeded,
    RunTimedOut,
    Source,
    StartRun,
    ToolCalled,
    TurnCompleted,
    UpdateProject,
    Usage,
    WebSearched,
    WorkspacePrepared,
)
from schemas.pattern import PatternCommandBase, PatternEvent
from schemas.run import RunEvent, RunEvents, StepEvent

SUMMARY_CHARS = 300
_TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def touched(messages: Iterable[Message]) -> tuple[set[str], set[str], set[str]]:
    """The run ids, project ids and pattern ids whose current rows a batch needs (one pass)."""
    runs: set[str] = set()
    projects: set[str] = set()
    patterns_: set[str] = set()
    for message in messages:
        match message:
            case RunEvent() | StartRun() | CancelRun():  # the run events first: most of the log
                runs.add(message.run_id)
            case CreateKey() | RevokeKey() | KeyCreated() | KeyRevoked():
                pass  # keys have no read model: the gateway folds them from the log itself
            case PatternEvent():
                patterns_.add(message.pattern_id)
            case PatternCommandBase():
                pass  # audited only
            case _:
                projects.add(message.project_id)
    return runs, projects, patterns_


class Changes:
    """The rows one batch upserts and appends, and where in the log it ends."""

    def __init__(
        self,
        runs: Mapping[str, RunRow],
        projects: Mapping[str, ProjectRow],
        prices: Prices,
        known_patterns: Mapping[str, PatternRow] | None = None,
    ) -> None:
        self._known_runs = runs
        self._known_projects = projects
        self._known_patterns = known_patterns or {}
        self.patterns: dict[str, PatternRow] = {}
        self._prices = prices
        self.runs: dict[str, RunRow] = {}
        self.projects: dict[str, ProjectRow] = {}
        self.appended: list[Row] = []
        self.skipped: Counter[str] = Counter()
        self.skipped_at: dict[str, int] = {}  # the last sequence of each skipped type
        self.applied = 0
        self._priced: set[str] = set()  # runs whose usage or model changed: their cost is due

    def settle(self) -> None:
        """Derive what depends only on a run's end state in the batch, once per run instead of per event:
        its progress, and the cost of its usage (its model and token totals as the batch leaves them)."""
        for run in self.runs.values():
            run.progress_pct = _progress(run)
        for run_id in self._priced:
            run = self.runs[run_id]
            run.cost_usd = self._prices.cost(run.model, _usage(run))

    def skip(self, seq: int, message_type: str) -> None:
        self.skipped[message_type] += 1
        self.skipped_at[message_type] = seq

    def apply(self, seq: int, message: Message) -> None:
        self.applied += 1
        match message:
            case RunEvent():  # first: most of the log
                self._run_event(seq, message)
            case StartRun():
                self._audit(seq, message)
                self._queue(seq, message)
            case CreateProject() | UpdateProject() | ArchiveProject() | CancelRun():
                self._audit(seq, message)
            case ProjectCreated() | ProjectUpdated() | ProjectArchived():
                self._project(seq, message)
            case CreateKey() | RevokeKey():
                self._audit(seq, message)
            case KeyCreated() | KeyRevoked():
                pass  # no read model for keys (the gateway follows them from the log)
            case ExtractPattern() | EditPattern() | RetirePattern() | RestorePattern():
                self._audit(seq, message)
            case PatternExtracted() | PatternEdited() | PatternRetired() | PatternRestored():
                row = self._pattern_row(message.pattern_id, message.tenant)
                patterns.apply(row, seq, message, self.appended)
            case _:
                assert_never(message)

    # commands

    def _audit(self, seq: int, command: AnyCommand) -> None:
        aggregate, _ = command.type.split(".")
        self.appended.append(
            CommandRow(
                seq=seq,
                tenant=command.tenant,
                command_id=command.id,
                type=command.type,
                aggregate=aggregate,
                aggregate_id=command.aggregate_id,
                actor=command.actor,
                origin=command.origin,
                issued_at=command.at,
            )
        )

    def _queue(self, seq: int, command: StartRun) -> None:
        run = self._run(command.run_id, command.tenant)
        if run.queued_at is None:
            run.project_id = command.project_id
            run.task_type = command.task_type
            run.instructions = command.instructions
            run.requested_by = command.actor
            run.reference_run_id = command.reference_run_id
            run.from_run_id = command.from_run_id
            run.queued_at = command.at
        run.last_seq = seq

    # projects

    def _project(self, seq: int, event: ProjectCreated | ProjectUpdated | ProjectArchived) -> None:
        project = self._project_row(event.project_id, event.tenant)
        match event:
            case ProjectCreated():
                project.name, project.description = event.name, event.description
                project.default_task_type, project.created_by = event.default_task_type, event.actor
                project.created_at = event.at
                project.source_kind, project.source = _source(event.source)
            case ProjectUpdated():
                project.name = event.name if event.name is not None else project.name
                project.description = (
                    event.description if event.description is not None else project.description
                )
                if event.default_task_type is not None:
                    project.default_task_type = event.default_task_type
                if event.source is not None:
                    project.source_kind, project.source = _source(event.source)
            case ProjectArchived():
                project.status, project.archived_at = "archived", event.at
            case _:
                assert_never(event)
        project.updated_at, project.version, project.last_seq = event.at, project.version + 1, seq

    def _project_row(self, project_id: str, tenant: str) -> ProjectRow:
        if project_id not in self.projects:
            known = self._known_projects.get(project_id)
            self.projects[project_id] = (
                msgspec.structs.replace(known) if known else ProjectRow(project_id=project_id, tenant=tenant)
            )
        return self.projects[project_id]

    def _pattern_row(self, pattern_id: str, tenant: str) -> PatternRow:
        if pattern_id not in self.patterns:
            known = self._known_patterns.get(pattern_id)
            self.patterns[pattern_id] = (
                msgspec.structs.replace(known) if known else PatternRow(pattern_id=pattern_id, tenant=tenant)
            )
        return self.patterns[pattern_id]

    # runs

    def _run(self, run_id: str, tenant: str) -> RunRow:
        run = self.runs.get(run_id)
        if run is None:
            known = self._known_runs.get(run_id)
            run = msgspec.structs.replace(known) if known else RunRow(run_id=run_id, tenant=tenant)
            self.runs[run_id] = run
        return run

    def _run_event(self, seq: int, event: RunEvents) -> None:
        run = self._run(event.run_id, event.tenant)
        run.events += 1
        run.last_seq = seq
        if isinstance(event, StepEvent):
            self._step(seq, run, event)
        else:
            self._lifecycle(seq, run, event)

    def _lifecycle(self, seq: int, run: RunRow, event: RunEvents) -> None:
        match event:
            case RunStarted():
                run.status, run.attempt, run.executor_id = "running", event.attempt, event.executor_id
                run.sandbox, run.codex_version = event.sandbox, event.codex_version
                if run.started_at is None:
                    run.started_at = event.at
                    run.queue_wait_ms = _ms(run.queued_at, event.at)
            case WorkspacePrepared():
                pass
            case TurnCompleted():
                run.tokens_in += event.usage.input_tokens
                run.tokens_cached += event.usage.cached_input_tokens
                run.tokens_out += event.usage.output_tokens
                run.tokens_reasoning += event.usage.reasoning_output_tokens
                self._priced.add(run.run_id)
            case ModelCallRecorded():
                self._model_call(seq, run, event)
            case ArtifactStored():
                blob = event.blob
                self.appended.append(
                    ArtifactRow(
                        seq=seq, tenant=event.tenant, run_id=run.run_id, name=event.name, kind=event.kind,
                        sha256=blob.sha256, size=blob.size, media_type=blob.media_type, occurred_at=event.at,
                    )
                )  # fmt: skip
            case LineQuarantined():
                run.quarantined += 1
            case LimitWarning() | CodexNotice():
                run.warnings += 1
            case PatternApplied():
                self.appended.extend(patterns.uses(seq, event))
            case RunSucceeded() | RunFailed() | RunCancelled() | RunTimedOut():
                _finish(run, event)
            case _:
                raise AssertionError(f"not a lifecycle event: {event.type}")

    def _model_call(self, seq: int, run: RunRow, event: ModelCallRecorded) -> None:
        run.model = run.model or event.model
        usage = event.usage
        self.appended.append(
            ModelCallRow(
                seq=seq, tenant=event.tenant, run_id=run.run_id, model=event.model, status=event.status,
                latency_ms=event.latency_ms, input_tokens=usage.input_tokens,
                cached_input_tokens=usage.cached_input_tokens, output_tokens=usage.output_tokens,
                reasoning_output_tokens=usage.reasoning_output_tokens,
                cost_usd=self._prices.cost(event.model, usage),
                request_sha256=event.request.sha256 if event.request else None,
                response_sha256=event.response.sha256 if event.response else None, occurred_at=event.at,
            )
        )  # fmt: skip
        self._priced.add(run.run_id)

    def _step(self, seq: int, run: RunRow, event: StepEvent) -> None:
        run.steps += 1
        status, exit_code, ref = None, None, None
        match event:
            case AgentMessage():
                summary, ref, run.final_message = event.text.text, event.text.ref, event.text.text
            case Reasoning():
                summary, ref = event.text.text, event.text.ref
            case CommandStarted():
                summary, status = event.command, "in_progress"
            case CommandExecuted():
                summary, status, exit_code, ref = (
                    event.command,
                    event.status,
                    event.exit_code,
                    event.output.ref,
                )
                run.commands_run += 1
            case FilesChanged():
                summary, status = ", ".join(f"{c.kind} {c.path}" for c in event.changes), event.status
                run.files_changed += len(event.changes)
            case ToolCalled():
                summary, status = f"{event.server}.{event.tool}", event.status
            case WebSearched():
                summary = event.query
            case PlanUpdated():
                run.plan_total, run.plan_done = len(event.items), sum(item.completed for item in event.items)
                summary = f"{run.plan_done}/{run.plan_total} done"
            case _:
                raise AssertionError(f"not a step event: {event.type}")
        self.appended.append(
            StepRow(
                seq=seq, tenant=event.tenant, run_id=run.run_id, item_id=event.item_id,
                kind=_kind(type(event)), summary=summary[:SUMMARY_CHARS], status=status,
                exit_code=exit_code, ref_sha256=ref.sha256 if ref else None, occurred_at=event.at,
            )
        )  # fmt: skip


def _finish(run: RunRow, event: RunSucceeded | RunFailed | RunCancelled | RunTimedOut) -> None:
    run.finished_at = event.at
    run.duration_ms = _ms(run.started_at or run.queued_at, event.at)
    match event:
        case RunSucceeded():
            run.status, run.summary = "succeeded", msgspec.json.encode(event.summary).decode()
            run.final_message = event.summary.final_message or run.final_message
        case RunFailed():
            run.status, run.failure_reason = "failed", str(event.reason)
            run.failure_detail, run.failure_suggestion = event.detail, event.suggestion
        case RunCancelled():
            run.status, run.cancelled_by = "cancelled", event.cancelled_by
        case RunTimedOut():
            run.status, run.timeout_limit = "timed_out", event.limit
        case _:
            assert_never(event)


@functools.cache
def _kind(step: type[StepEvent]) -> str:
    """`command_executed` for `run.command_executed`: the step kind stored in `steps.kind`."""
    return str(step.__struct_config__.tag).removeprefix("run.")


def _progress(run: RunRow) -> float:
    if run.status in _TERMINAL:
        return 100.0
    if run.plan_total:
        return round(min(95.0, 100.0 * run.plan_done / run.plan_total), 1)
    return 0.0


def _usage(run: RunRow) -> Usage:
    return Usage(
        input_tokens=run.tokens_in,
        cached_input_tokens=run.tokens_cached,
        output_tokens=run.tokens_out,
        reasoning_output_tokens=run.tokens_reasoning,
    )


def _ms(start: datetime | None, end: datetime) -> int | None:
    return None if start is None else int((end - start).total_seconds() * 1000)


def _source(source: Source) -> tuple[str, str]:
    match source:
        case LocalSource():
            return "local", source.path
        case GitSource():
            return "git", f"{source.url} {source.ref}"
        case _:
            assert_never(source)
