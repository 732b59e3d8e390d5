"""Run events as lines for a person watching a terminal (`swarm up --demo`, and later `swarm watch`)."""

from __future__ import annotations

from typing import assert_never

from schemas import (
    AgentMessage,
    ArtifactStored,
    CodexNotice,
    CommandExecuted,
    CommandStarted,
    FilesChanged,
    LimitWarning,
    LineQuarantined,
    ModelCallRecorded,
    PatternApplied,
    PlanUpdated,
    Reasoning,
    RunCancelled,
    RunFailed,
    RunStarted,
    RunSucceeded,
    RunTimedOut,
    ToolCalled,
    TurnCompleted,
    Usage,
    WebSearched,
    WorkspacePrepared,
)
from schemas.run import RunEvents

WIDTH = 100


def line(event: RunEvents) -> str | None:
    """One line describing the event, or `None` for events a watcher does not need to see."""
    match event:
        case RunStarted():
            return f"▶ started: attempt {event.attempt} on {event.executor_id} ({event.sandbox} sandbox)"
        case WorkspacePrepared():
            return (
                f"▶ workspace: {event.files} files from {event.source}, baseline {event.baseline_commit[:10]}"
            )
        case Reasoning():
            return f"  … {_short(event.text.text)}"
        case CommandStarted():
            return f"  $ {_short(event.command)}"
        case CommandExecuted():
            return f"    exit {event.exit_code}  {_short(event.output.text)}"
        case FilesChanged():
            changes = ", ".join(f"{change.kind} {change.path}" for change in event.changes)
            return f"  ✎ {_short(changes)}"
        case AgentMessage():
            return f"  » {_short(event.text.text, WIDTH * 3)}"
        case ToolCalled():
            return f"  ⚙ {event.server}.{event.tool} ({event.status})"
        case WebSearched():
            return f"  ⌕ {_short(event.query)}"
        case PlanUpdated():
            done = sum(item.completed for item in event.items)
            return f"  ☐ plan: {done}/{len(event.items)} done"
        case CodexNotice():
            return f"  ! codex {event.level}: {_short(event.message.text)}"
        case LineQuarantined():
            return f"  ? quarantined a line Codex printed: {event.problem}"
        case LimitWarning():
            return f"  ! {event.limit} at {event.used:.0f} of {event.hard_limit:.0f}"
        case PatternApplied():
            used = ", ".join(f"{p.pattern_id} v{p.version}" for p in event.patterns)
            return f"▶ patterns: {used}"
        case TurnCompleted() | ModelCallRecorded() | ArtifactStored():
            return None
        case RunSucceeded():
            changed = len(event.summary.files_changed)
            return f"✔ succeeded: {changed} files changed; {tokens(event.summary.usage)}"
        case RunFailed():
            return f"✘ failed ({event.reason}): {_short(event.detail)}" + (
                f"\n  hint: {event.suggestion}" if event.suggestion else ""
            )
        case RunCancelled():
            return f"■ cancelled by {event.cancelled_by}" + (f": {event.reason}" if event.reason else "")
        case RunTimedOut():
            return f"⏱ timed out: {event.limit} limit of {event.seconds} s"
        case _:
            assert_never(event)


def tokens(usage: Usage) -> str:
    return (
        f"tokens {usage.input_tokens:,} in ({usage.cached_input_tokens:,} cached), "
        f"{usage.output_tokens:,} out"
    )


def _short(text: str, width: int = WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
