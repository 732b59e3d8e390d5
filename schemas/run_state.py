"""The pure run lifecycle: `evolve` folds one event into the state, `decide` turns a command into events.

    pending ──started──▶ running ──succeeded / failed / cancelled / timed_out──▶ (terminal)
       │                  │  ▲
       │                  └──┘ started again: a new attempt after the executor was lost
       └──cancelled / failed──▶ (terminal)

Terminal states are immutable: any further event is an `IllegalTransition`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import NoReturn, assert_never

import msgspec

from schemas.base import Usage
from schemas.errors import IllegalTransition, Rejected
from schemas.rules import Context
from schemas.run import (
    AgentMessage,
    ArtifactStored,
    CancelRun,
    CodexNotice,
    CommandExecuted,
    CommandStarted,
    FailureReason,
    FilesChanged,
    LimitWarning,
    LineQuarantined,
    ModelCallRecorded,
    PatternApplied,
    PlanUpdated,
    Reasoning,
    RunCancelled,
    RunCommand,
    RunEvents,
    RunFailed,
    RunStarted,
    RunSucceeded,
    RunTimedOut,
    StartRun,
    ToolCalled,
    TurnCompleted,
    WebSearched,
    WorkspacePrepared,
)


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING)


class RunState(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    status: RunStatus = RunStatus.PENDING
    attempt: int = 0
    executor_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    steps: int = 0
    side_effects: bool = False  # in the current attempt: a command ran or a file changed
    usage: Usage = Usage()
    failure: FailureReason | None = None
    version: int = 0  # events folded so far


class ExecutorInfo(msgspec.Struct, frozen=True, kw_only=True):
    executor_id: str
    sandbox: str
    sandbox_version: str = ""
    codex_version: str = ""


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When a run abandoned by a lost executor may start again as a new attempt."""

    max_attempts: int = 3
    retry_after_side_effects: bool = False


DEFAULT_POLICY = RetryPolicy()

_TERMINAL = {
    RunSucceeded: RunStatus.SUCCEEDED,
    RunFailed: RunStatus.FAILED,
    RunCancelled: RunStatus.CANCELLED,
    RunTimedOut: RunStatus.TIMED_OUT,
}


def evolve(state: RunState, event: RunEvents) -> RunState:
    """Fold one event; raise `IllegalTransition` when it cannot follow the current state."""
    if state.status.terminal:
        _illegal(state, event)
    counted = msgspec.structs.replace(state, version=state.version + 1)
    match event:
        case RunStarted(attempt=attempt) if attempt == state.attempt + 1:
            return msgspec.structs.replace(
                counted,
                status=RunStatus.RUNNING,
                attempt=attempt,
                executor_id=event.executor_id,
                started_at=state.started_at or event.at,
                side_effects=False,
            )
        case RunStarted():
            _illegal(state, event)
        case RunCancelled() | RunFailed():
            return _finish(counted, event)
        case RunSucceeded() | RunTimedOut():
            _require_running(state, event)
            return _finish(counted, event)
        case CommandStarted() | CommandExecuted() | FilesChanged():
            _require_running(state, event)
            return msgspec.structs.replace(counted, steps=state.steps + 1, side_effects=True)
        case AgentMessage() | Reasoning() | ToolCalled() | WebSearched() | PlanUpdated():
            _require_running(state, event)
            return msgspec.structs.replace(counted, steps=state.steps + 1)
        case TurnCompleted():
            _require_running(state, event)
            return msgspec.structs.replace(counted, usage=state.usage + event.usage)
        case (
            WorkspacePrepared()
            | ModelCallRecorded()
            | ArtifactStored()
            | LineQuarantined()
            | CodexNotice()
            | LimitWarning()
            | PatternApplied()
        ):
            _require_running(state, event)
            return counted
        case _:
            assert_never(event)


def fold(run_id: str, events: Iterable[RunEvents]) -> RunState:
    state = RunState(run_id=run_id)
    for event in events:
        state = evolve(state, event)
    return state


def decide(
    state: RunState,
    command: RunCommand,
    ctx: Context,
    executor: ExecutorInfo | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> list[RunEvents]:
    """The events a command produces in this state; `[]` when there is nothing left to do."""
    match command:
        case CancelRun():
            if state.status.terminal:
                raise Rejected("run", state.run_id, f"it already ended ({state.status})")
            return [
                RunCancelled(
                    **ctx.envelope(command),
                    run_id=command.run_id,
                    cancelled_by=command.actor,
                    reason=command.reason,
                )
            ]
        case StartRun():
            if state.status.terminal:
                return []
            if executor is None:
                raise ValueError("starting a run needs the executor's description")
            return [_start_or_fail(state, command, ctx, executor, policy)]
        case _:
            assert_never(command)


def _start_or_fail(
    state: RunState, command: StartRun, ctx: Context, executor: ExecutorInfo, policy: RetryPolicy
) -> RunEvents:
    envelope = ctx.envelope(command)
    may_retry = not state.side_effects or policy.retry_after_side_effects
    if state.status is RunStatus.PENDING or (may_retry and state.attempt < policy.max_attempts):
        return RunStarted(
            **envelope,
            run_id=command.run_id,
            attempt=state.attempt + 1,
            executor_id=executor.executor_id,
            sandbox=executor.sandbox,
            sandbox_version=executor.sandbox_version,
            codex_version=executor.codex_version,
        )
    why = f"it reached {policy.max_attempts} attempts" if may_retry else "it had side effects"
    lost = f"the executor {state.executor_id} running attempt {state.attempt} was lost"
    return RunFailed(
        **envelope,
        run_id=command.run_id,
        reason=FailureReason.EXECUTOR_LOST,
        detail=f"{lost}; not retried: {why}",
        suggestion="start the run again; its workspace changes so far were not kept",
    )


def _finish(state: RunState, event: RunEvents) -> RunState:
    failure = event.reason if isinstance(event, RunFailed) else None
    return msgspec.structs.replace(
        state, status=_TERMINAL[type(event)], finished_at=event.at, failure=failure
    )


def _require_running(state: RunState, event: RunEvents) -> None:
    if state.status is not RunStatus.RUNNING:
        _illegal(state, event)


def _illegal(state: RunState, event: RunEvents) -> NoReturn:
    raise IllegalTransition("run", state.run_id, str(state.status), event.type)
