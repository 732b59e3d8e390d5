"""The run aggregate's messages: one Codex run on a project, from request to terminal outcome.

Step events mirror the kinds of item `codex exec --json` prints; every event of one run shares the
subject `swarm.<tenant>.evt.run.<run_id>`, so the per-subject order is the run's order.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta

from schemas.base import BlobRef, Body, CommandBase, EventBase, RunLimits, Usage
from schemas.types import (
    ActorId,
    Count,
    Instructions,
    Name,
    PatternId,
    Positive,
    ProjectId,
    RunId,
    ShortText,
    TaskType,
    Text,
)

Path = Annotated[str, Meta(min_length=1, max_length=4096)]
ItemId = Annotated[str, Meta(max_length=128)]

# Commands


class RunCommandBase(CommandBase, frozen=True, kw_only=True):
    AGGREGATE: ClassVar[str] = "run"
    run_id: RunId

    @property
    def aggregate_id(self) -> str:
        return self.run_id


class StartRun(RunCommandBase, frozen=True, kw_only=True, tag="run.start"):
    project_id: ProjectId
    instructions: Instructions
    task_type: TaskType = "code"
    reference_run_id: RunId | None = None
    from_run_id: RunId | None = None
    pattern_ids: Annotated[list[PatternId], Meta(max_length=10)] = []
    auto_patterns: bool = False
    limits: RunLimits = RunLimits()


class CancelRun(RunCommandBase, frozen=True, kw_only=True, tag="run.cancel"):
    reason: ShortText = ""


# Lifecycle events


class RunEvent(EventBase, frozen=True, kw_only=True):
    AGGREGATE: ClassVar[str] = "run"
    run_id: RunId

    @property
    def aggregate_id(self) -> str:
        return self.run_id


class RunStarted(RunEvent, frozen=True, kw_only=True, tag="run.started"):
    attempt: Positive
    executor_id: ActorId
    sandbox: Name
    sandbox_version: ShortText = ""
    codex_version: ShortText = ""


class WorkspacePrepared(RunEvent, frozen=True, kw_only=True, tag="run.workspace_prepared"):
    source: Literal["local", "git", "run"]
    baseline_commit: Annotated[str, Meta(pattern="^[0-9a-f]{40,64}$")]
    files: Count
    bytes: Count
    from_run_id: RunId | None = None


# Step events, one per Codex item kind


class StepEvent(RunEvent, frozen=True, kw_only=True):
    item_id: ItemId


class AgentMessage(StepEvent, frozen=True, kw_only=True, tag="run.agent_message"):
    text: Body


class Reasoning(StepEvent, frozen=True, kw_only=True, tag="run.reasoning"):
    text: Body


class CommandStarted(StepEvent, frozen=True, kw_only=True, tag="run.command_started"):
    command: Text


class CommandExecuted(StepEvent, frozen=True, kw_only=True, tag="run.command_executed"):
    command: Text
    exit_code: int | None
    status: Literal["completed", "failed", "declined", "abandoned"]
    output: Body = Body()


class FileChange(msgspec.Struct, frozen=True, kw_only=True):
    path: Path
    kind: Literal["add", "update", "delete"]


class FilesChanged(StepEvent, frozen=True, kw_only=True, tag="run.files_changed"):
    changes: Annotated[list[FileChange], Meta(max_length=1000)]
    status: Literal["completed", "failed"]


class ToolCalled(StepEvent, frozen=True, kw_only=True, tag="run.tool_called"):
    server: ShortText
    tool: ShortText
    status: Literal["completed", "failed"]
    arguments: Body = Body()
    result: Body = Body()


class WebSearched(StepEvent, frozen=True, kw_only=True, tag="run.web_searched"):
    query: Text


class TodoItem(msgspec.Struct, frozen=True, kw_only=True):
    text: ShortText
    completed: bool = False


class PlanUpdated(StepEvent, frozen=True, kw_only=True, tag="run.plan_updated"):
    items: Annotated[list[TodoItem], Meta(max_length=200)]


class TurnCompleted(RunEvent, frozen=True, kw_only=True, tag="run.turn_completed"):
    usage: Usage


class ModelCallRecorded(RunEvent, frozen=True, kw_only=True, tag="run.model_call_recorded"):
    model: Name
    status: Positive
    latency_ms: Count
    usage: Usage = Usage()
    request: BlobRef | None = None
    response: BlobRef | None = None


class ArtifactStored(RunEvent, frozen=True, kw_only=True, tag="run.artifact_stored"):
    name: Name
    kind: Literal["diff", "transcript", "file_list", "log", "output", "other"]
    blob: BlobRef


class LineQuarantined(RunEvent, frozen=True, kw_only=True, tag="run.line_quarantined"):
    """A line of Codex output that could not be understood, kept whole rather than dropped."""

    raw: Body
    problem: ShortText


class CodexNotice(RunEvent, frozen=True, kw_only=True, tag="run.codex_notice"):
    """A warning or error Codex printed outside any step (a retried connection, unknown model metadata)."""

    level: Literal["warning", "error"]
    message: Body


class LimitWarning(RunEvent, frozen=True, kw_only=True, tag="run.limit_warning"):
    limit: Literal["events", "bytes", "tokens", "cost", "deadline"]
    used: Annotated[float, Meta(ge=0)]
    soft_limit: Annotated[float, Meta(ge=0)]
    hard_limit: Annotated[float, Meta(ge=0)]


class AppliedPattern(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One pattern version rendered into a run's prompt, and how it was chosen."""

    pattern_id: PatternId
    version: Positive
    selected_by: Literal["explicit", "reference", "auto"]
    score: Annotated[float, Meta(ge=0)] = 0.0


class PatternApplied(RunEvent, frozen=True, kw_only=True, tag="pattern.applied"):
    """The patterns a run's prompt carries, appended before Codex starts (a run event despite its tag)."""

    patterns: Annotated[list[AppliedPattern], Meta(min_length=1, max_length=10)]


# Terminal events


class CommandRun(msgspec.Struct, frozen=True, kw_only=True):
    command: Text
    exit_code: int | None


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a succeeded run did, for machines: the goal, changes, commands, final word and usage."""

    goal: Text
    files_changed: Annotated[list[Path], Meta(max_length=1000)] = []
    commands: Annotated[list[CommandRun], Meta(max_length=500)] = []
    final_message: Text = ""
    usage: Usage = Usage()


class RunSucceeded(RunEvent, frozen=True, kw_only=True, tag="run.succeeded"):
    summary: RunSummary


class FailureReason(StrEnum):
    CODEX_ERROR = "codex_error"
    NONZERO_EXIT = "nonzero_exit"
    SANDBOX_ERROR = "sandbox_error"
    TIMEOUT = "timeout"
    BUDGET_EXCEEDED = "budget_exceeded"
    LIMIT_EXCEEDED = "limit_exceeded"
    EXECUTOR_LOST = "executor_lost"
    INVALID_REQUEST = "invalid_request"


class RunFailed(RunEvent, frozen=True, kw_only=True, tag="run.failed"):
    reason: FailureReason
    detail: Text
    suggestion: ShortText = ""


class RunCancelled(RunEvent, frozen=True, kw_only=True, tag="run.cancelled"):
    cancelled_by: ActorId
    reason: ShortText = ""


class RunTimedOut(RunEvent, frozen=True, kw_only=True, tag="run.timed_out"):
    limit: Literal["deadline", "idle"]
    seconds: Positive


RunCommand = StartRun | CancelRun
StepEvents = (
    AgentMessage
    | Reasoning
    | CommandStarted
    | CommandExecuted
    | FilesChanged
    | ToolCalled
    | WebSearched
    | PlanUpdated
)
TerminalEvents = RunSucceeded | RunFailed | RunCancelled | RunTimedOut
RunEvents = (
    RunStarted
    | WorkspacePrepared
    | StepEvents
    | TurnCompleted
    | ModelCallRecorded
    | ArtifactStored
    | LineQuarantined
    | CodexNotice
    | LimitWarning
    | PatternApplied
    | TerminalEvents
)
