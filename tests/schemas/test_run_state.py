"""The pure run lifecycle: legal transitions fold, illegal ones raise, and `decide` picks the right events."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from schemas import (
    AgentMessage,
    CancelRun,
    CommandExecuted,
    CommandStarted,
    Context,
    FailureReason,
    FilesChanged,
    IdSource,
    IllegalTransition,
    Kind,
    Rejected,
    RunCancelled,
    RunFailed,
    RunStarted,
    RunSucceeded,
    RunTimedOut,
    StartRun,
    TurnCompleted,
    Usage,
)
from schemas.run import RunEvents
from schemas.run_state import ExecutorInfo, RetryPolicy, RunState, RunStatus, decide, evolve, fold
from tests.schemas.test_codec import EVENT_CLASSES, sample

NOW = datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
CLIENT = "key_alice"
EXECUTOR = ExecutorInfo(executor_id="exe_box-1", sandbox="docker", sandbox_version="27", codex_version="0.46")
RUN_EVENT_CLASSES = [cls for cls in EVENT_CLASSES if cls.AGGREGATE == "run"]
TERMINAL = {
    RunSucceeded: RunStatus.SUCCEEDED,
    RunFailed: RunStatus.FAILED,
    RunCancelled: RunStatus.CANCELLED,
    RunTimedOut: RunStatus.TIMED_OUT,
}
RUN_ID = sample(RunStarted).run_id


def context(seed: int = 1) -> Context:
    ids = IdSource(clock_ms=lambda: int(NOW.timestamp() * 1000), entropy=random.Random(seed).randbytes)
    return Context(now=NOW, actor=EXECUTOR.executor_id, ids=ids)


def event(cls: type, **changes: Any) -> Any:
    """The codec sample of `cls` for this run, with `changes` applied."""
    return msgspec.structs.replace(sample(cls), run_id=RUN_ID, **changes)


def started(attempt: int = 1, minutes: int = 0) -> RunStarted:
    return event(RunStarted, attempt=attempt, at=NOW + timedelta(minutes=minutes))


def start_command() -> StartRun:
    return msgspec.structs.replace(sample(StartRun), run_id=RUN_ID, actor=CLIENT)


def cancel_command() -> CancelRun:
    return msgspec.structs.replace(sample(CancelRun), run_id=RUN_ID, actor=CLIENT, reason="not needed")


def running(*events: RunEvents) -> RunState:
    return fold(RUN_ID, [started(), *events])


def ended(cls: type) -> RunState:
    return running(event(cls))


def test_a_new_run_is_pending() -> None:
    """Folding no events gives a pending run at attempt 0 and version 0."""
    state = fold(RUN_ID, [])
    assert (state.status, state.attempt, state.version) == (RunStatus.PENDING, 0, 0)
    assert not state.status.terminal


def test_started_makes_the_run_running() -> None:
    """`run.started` with attempt 1 moves pending to running and records executor and start time."""
    state = running()
    assert state.status is RunStatus.RUNNING
    assert (state.attempt, state.executor_id, state.started_at) == (1, sample(RunStarted).executor_id, NOW)


@pytest.mark.parametrize(("cls", "status"), TERMINAL.items(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_running_reaches_each_terminal_state(cls: type, status: RunStatus) -> None:
    """Each terminal event ends a running run with its status and finish time."""
    state = ended(cls)
    assert state.status is status
    assert state.status.terminal
    assert state.finished_at == sample(cls).at
    assert state.version == 2


def test_failure_records_its_reason() -> None:
    """A failed run keeps the failure reason; other outcomes have none."""
    assert ended(RunFailed).failure is FailureReason.NONZERO_EXIT
    assert ended(RunSucceeded).failure is None


@pytest.mark.parametrize("cls", [RunCancelled, RunFailed], ids=lambda cls: cls.__name__)
def test_a_pending_run_can_be_cancelled_or_failed(cls: type) -> None:
    """A queued run may end without ever starting, by cancellation or failure."""
    assert fold(RUN_ID, [event(cls)]).status is TERMINAL[cls]


@pytest.mark.parametrize("terminal", list(TERMINAL), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("cls", RUN_EVENT_CLASSES, ids=lambda cls: cls.__name__)
def test_terminal_states_are_immutable(terminal: type, cls: type) -> None:
    """Any event after a terminal one raises `IllegalTransition` naming the status and the event type."""
    state = ended(terminal)
    with pytest.raises(IllegalTransition) as caught:
        evolve(state, event(cls))
    assert caught.value.status == str(TERMINAL[terminal])
    assert caught.value.message_type == sample(cls).type
    assert caught.value.aggregate_id == RUN_ID


STEP_CLASSES = [cls for cls in RUN_EVENT_CLASSES if cls not in (RunStarted, RunCancelled, RunFailed)]


@pytest.mark.parametrize("cls", STEP_CLASSES, ids=lambda cls: cls.__name__)
def test_steps_before_start_are_illegal(cls: type) -> None:
    """Only start, cancel or fail may follow a pending run; anything else raises `IllegalTransition`."""
    with pytest.raises(IllegalTransition) as caught:
        evolve(RunState(run_id=RUN_ID), event(cls))
    assert (caught.value.status, caught.value.message_type) == ("pending", sample(cls).type)


@pytest.mark.parametrize("attempt", [0, 2, 3])
def test_started_must_be_the_next_attempt(attempt: int) -> None:
    """A `run.started` whose attempt is not the current one plus one is illegal."""
    with pytest.raises(IllegalTransition):
        evolve(RunState(run_id=RUN_ID), started(attempt=attempt))


def test_a_new_attempt_resets_side_effects_but_keeps_the_first_start_time() -> None:
    """Attempt 2 clears the side-effect flag and keeps when the run first started."""
    state = fold(RUN_ID, [started(), event(CommandExecuted), started(attempt=2, minutes=5)])
    assert (state.attempt, state.side_effects, state.started_at) == (2, False, NOW)
    assert state.version == 3


@pytest.mark.parametrize("cls", [CommandStarted, CommandExecuted, FilesChanged], ids=lambda cls: cls.__name__)
def test_commands_and_file_changes_are_side_effects(cls: type) -> None:
    """Running a command or changing a file marks the attempt as having side effects and counts a step."""
    state = running(event(cls))
    assert (state.side_effects, state.steps) == (True, 1)


def test_messages_are_steps_without_side_effects() -> None:
    """An agent message counts as a step but is not a side effect."""
    state = running(event(AgentMessage), event(AgentMessage))
    assert (state.side_effects, state.steps, state.version) == (False, 2, 3)


def test_usage_sums_across_turns() -> None:
    """Token usage is the sum of every `run.turn_completed` of the run."""
    first = Usage(input_tokens=100, cached_input_tokens=10, output_tokens=20, reasoning_output_tokens=5)
    second = Usage(input_tokens=7, output_tokens=3)
    state = running(event(TurnCompleted, usage=first), event(TurnCompleted, usage=second))
    assert state.usage == Usage(
        input_tokens=107, cached_input_tokens=10, output_tokens=23, reasoning_output_tokens=5
    )


def test_start_on_pending_gives_attempt_one() -> None:
    """Starting a pending run gives one `run.started`, attempt 1, enveloped by the context."""
    command = start_command()
    [decided] = decide(RunState(run_id=RUN_ID), command, context(), EXECUTOR)
    assert isinstance(decided, RunStarted)
    assert (decided.attempt, decided.executor_id, decided.sandbox) == (1, "exe_box-1", "docker")
    assert (decided.at, decided.actor, decided.causation_id, decided.tenant) == (
        NOW,
        EXECUTOR.executor_id,
        command.id,
        command.tenant,
    )


def test_decided_events_are_deterministic_under_a_seeded_context() -> None:
    """The same state, command and seeded context decide the same events, ids included."""
    args = (RunState(run_id=RUN_ID), start_command())
    assert decide(*args, context(4), EXECUTOR) == decide(*args, context(4), EXECUTOR)


def test_start_on_running_without_side_effects_is_a_new_attempt() -> None:
    """A redelivered start of a run that did nothing irreversible starts attempt 2."""
    state = running(event(AgentMessage))
    [decided] = decide(state, start_command(), context(), EXECUTOR)
    assert isinstance(decided, RunStarted)
    assert decided.attempt == 2
    assert evolve(state, decided).attempt == 2


@pytest.mark.parametrize("cls", [CommandExecuted, FilesChanged], ids=lambda cls: cls.__name__)
def test_start_on_running_with_side_effects_fails_executor_lost(cls: type) -> None:
    """A redelivered start of a run that already ran a command or changed files fails it as executor_lost."""
    state = running(event(cls))
    [decided] = decide(state, start_command(), context(), EXECUTOR)
    assert isinstance(decided, RunFailed)
    assert decided.reason is FailureReason.EXECUTOR_LOST
    assert "side effects" in decided.detail
    assert evolve(state, decided).status is RunStatus.FAILED


def test_policy_may_retry_after_side_effects() -> None:
    """With `retry_after_side_effects`, a run with side effects starts a new attempt instead."""
    policy = RetryPolicy(retry_after_side_effects=True)
    [decided] = decide(running(event(FilesChanged)), start_command(), context(), EXECUTOR, policy)
    assert isinstance(decided, RunStarted)
    assert decided.attempt == 2


@pytest.mark.parametrize("max_attempts", [1, 2, 3])
def test_start_after_max_attempts_fails(max_attempts: int) -> None:
    """Once the run has used `max_attempts` attempts, another start fails it as executor_lost."""
    state = fold(RUN_ID, [started(attempt=n) for n in range(1, max_attempts + 1)])
    policy = RetryPolicy(max_attempts=max_attempts)
    [decided] = decide(state, start_command(), context(), EXECUTOR, policy)
    assert isinstance(decided, RunFailed)
    assert decided.reason is FailureReason.EXECUTOR_LOST
    assert f"{max_attempts} attempts" in decided.detail


@pytest.mark.parametrize("terminal", list(TERMINAL), ids=lambda cls: cls.__name__)
def test_start_on_a_finished_run_does_nothing(terminal: type) -> None:
    """Starting a run that already ended decides no events."""
    assert decide(ended(terminal), start_command(), context(), EXECUTOR) == []


def test_start_needs_the_executor_description() -> None:
    """Deciding a start without saying which executor runs it is a programming error."""
    with pytest.raises(ValueError, match="executor"):
        decide(RunState(run_id=RUN_ID), start_command(), context())


@pytest.mark.parametrize("state", [RunState(run_id=RUN_ID), running()], ids=["pending", "running"])
def test_cancel_on_pending_or_running_cancels(state: RunState) -> None:
    """Cancelling a live run gives `run.cancelled` by the command's actor, appended by the context's actor."""
    command = cancel_command()
    [decided] = decide(state, command, context())
    assert isinstance(decided, RunCancelled)
    assert (decided.cancelled_by, decided.reason, decided.actor) == (
        CLIENT,
        "not needed",
        EXECUTOR.executor_id,
    )
    assert decided.causation_id == command.id
    assert evolve(state, decided).status is RunStatus.CANCELLED


def test_cancel_without_context_actor_is_appended_by_the_client() -> None:
    """With no acting executor, the cancellation event's actor is the command's actor."""
    ctx = Context(now=NOW, ids=IdSource(clock_ms=lambda: 0, entropy=random.Random(2).randbytes))
    [decided] = decide(RunState(run_id=RUN_ID), cancel_command(), ctx)
    assert decided.actor == CLIENT


@pytest.mark.parametrize("terminal", list(TERMINAL), ids=lambda cls: cls.__name__)
def test_cancel_on_a_finished_run_is_rejected(terminal: type) -> None:
    """Cancelling a run that already ended raises `Rejected` saying how it ended."""
    with pytest.raises(Rejected, match=str(TERMINAL[terminal])) as caught:
        decide(ended(terminal), cancel_command(), context())
    assert caught.value.aggregate == "run"
    assert caught.value.aggregate_id == RUN_ID


def test_decided_ids_are_event_ids() -> None:
    """Decided events get fresh `evt_` ids from the context's id source."""
    [decided] = decide(RunState(run_id=RUN_ID), cancel_command(), context())
    assert decided.id.startswith(f"{Kind.EVENT}_")
