"""Codex's `exec --json` output, one line at a time, turned into run events.

Every line becomes an event or is deliberately silent (`thread.started`, `turn.started`, an item's
start when its completion carries everything); a line that does not parse or has a shape this
version does not know becomes a `LineQuarantined` event with the raw line, never nothing. The
translator also keeps what the terminal event needs: commands and exit codes, files changed, the
final agent message, token usage, and whether the turn failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

import msgspec

from schemas import (
    AgentMessage,
    Body,
    CodexNotice,
    CommandExecuted,
    CommandRun,
    CommandStarted,
    FileChange,
    FilesChanged,
    LineQuarantined,
    PlanUpdated,
    Reasoning,
    TodoItem,
    ToolCalled,
    TurnCompleted,
    Usage,
    WebSearched,
)
from schemas.base import EventBase
from schemas.codec import AnyEvent
from schemas.run import RunEvents

MakeBody = Callable[[str], Awaitable[Body]]
Envelope = Callable[[], dict[str, Any]]  # the id, time, tenant, actor and causation of a new event

_COMMAND_STATUS = {"completed", "failed", "declined", "abandoned"}


class _Line(msgspec.Struct, frozen=True):
    type: str
    item: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    message: str | None = None
    thread_id: str | None = None


_decoder = msgspec.json.Decoder(_Line)


class Malformed(Exception):
    """A line this version of the translator cannot understand."""


@dataclass(slots=True)
class Outcome:
    """What the run did, gathered while translating, for the terminal event."""

    thread_id: str = ""
    turns_completed: int = 0
    turn_failed: str | None = None  # Codex's error message when the turn failed
    last_error: str = ""
    usage: Usage = field(default_factory=Usage)
    commands: list[CommandRun] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    final_message: str = ""
    quarantined: int = 0


class Translator:
    """Feeds on one run's Codex output; `outcome` says how the run went so far."""

    def __init__(
        self, run_id: str, envelope: Envelope, body: MakeBody, workspace: str = "/workspace"
    ) -> None:
        self._run_id = run_id
        self._envelope = envelope
        self._body = body
        self._workspace = PurePosixPath(workspace)
        self.outcome = Outcome()

    async def feed(self, raw: bytes) -> list[RunEvents]:
        """The events for one line of output (an empty line gives none)."""
        if not raw.strip():
            return []
        try:
            line = _decoder.decode(raw)
            events = await self._translate(line)
            for event in events:
                _check(event)
        except (msgspec.DecodeError, Malformed, KeyError, TypeError, ValueError) as exc:
            return [await self._quarantine(raw, exc)]
        return events

    async def _quarantine(self, raw: bytes, exc: Exception) -> LineQuarantined:
        self.outcome.quarantined += 1
        problem = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
        text = raw.decode(errors="replace")
        return LineQuarantined(**self._common(), raw=await self._body(text), problem=problem)

    async def _translate(self, line: _Line) -> list[RunEvents]:
        match line.type:
            case "thread.started":
                self.outcome.thread_id = line.thread_id or ""
                return []
            case "turn.started":
                return []
            case "turn.completed":
                return [self._turn_completed(_required(line.usage, "usage"))]
            case "turn.failed":
                message = str(_required(line.error, "error").get("message", ""))
                self.outcome.turn_failed = message or "the turn failed without a message"
                return [await self._notice("error", self.outcome.turn_failed)]
            case "error":
                self.outcome.last_error = line.message or ""
                return [await self._notice("error", self.outcome.last_error)]
            case "item.started" | "item.updated" | "item.completed":
                item = _required(line.item, "item")
                return await self._item(line.type.removeprefix("item."), item)
            case other:
                raise Malformed(f"unknown event type {other!r}")

    def _turn_completed(self, usage: dict[str, Any]) -> TurnCompleted:
        turn = Usage(
            input_tokens=int(usage.get("input_tokens", 0)),
            cached_input_tokens=int(usage.get("cached_input_tokens", 0)),
            output_tokens=int(usage.get("output_tokens", 0)),
            reasoning_output_tokens=int(usage.get("reasoning_output_tokens", 0)),
        )
        self.outcome.turns_completed += 1
        self.outcome.usage = self.outcome.usage + turn
        return TurnCompleted(**self._common(), usage=turn)

    async def _item(self, phase: str, item: dict[str, Any]) -> list[RunEvents]:
        kind, item_id = item["type"], str(item["id"])
        match kind, phase:
            case "command_execution", "started":
                return [CommandStarted(**self._common(), item_id=item_id, command=_clip(item["command"]))]
            case "command_execution", "completed":
                return [await self._command(item_id, item)]
            case "agent_message", "completed":
                self.outcome.final_message = str(item["text"])
                return [AgentMessage(**self._common(), item_id=item_id, text=await self._body(item["text"]))]
            case "reasoning", "completed":
                return [Reasoning(**self._common(), item_id=item_id, text=await self._body(item["text"]))]
            case "file_change", "completed":
                return [self._files(item_id, item)]
            case "mcp_tool_call", "completed":
                return [await self._tool(item_id, item)]
            case "web_search", "completed":
                return [WebSearched(**self._common(), item_id=item_id, query=_clip(item["query"]))]
            case "todo_list", _:
                return [self._plan(item_id, item)]
            case "error", "completed":
                return [await self._notice("warning", str(item["message"]))]
            case (("command_execution" | "file_change" | "mcp_tool_call" | "web_search"), _):
                return []  # the start or an update of an item whose completion carries everything
            case _:
                raise Malformed(f"unknown item {kind!r} in item.{phase}")

    async def _command(self, item_id: str, item: dict[str, Any]) -> CommandExecuted:
        status = str(item["status"])
        if status not in _COMMAND_STATUS:
            raise Malformed(f"unknown command status {status!r}")
        exit_code = item.get("exit_code")
        command = _clip(item["command"])
        self.outcome.commands.append(CommandRun(command=command, exit_code=exit_code))
        output = await self._body(str(item.get("aggregated_output") or ""))
        return CommandExecuted(
            **self._common(),
            item_id=item_id,
            command=command,
            exit_code=exit_code,
            status=status,  # type: ignore[arg-type]  # checked against _COMMAND_STATUS above
            output=output,
        )

    def _files(self, item_id: str, item: dict[str, Any]) -> FilesChanged:
        changes = [
            FileChange(path=self._relative(str(change["path"])), kind=change["kind"])
            for change in item["changes"]
        ]
        for change in changes:
            if change.path not in self.outcome.files:
                self.outcome.files.append(change.path)
        status: Literal["completed", "failed"] = "failed" if item.get("status") == "failed" else "completed"
        return msgspec.convert(
            {**self._common(), "item_id": item_id, "changes": changes, "status": status}, FilesChanged
        )

    async def _tool(self, item_id: str, item: dict[str, Any]) -> ToolCalled:
        status: Literal["completed", "failed"] = "failed" if item.get("status") == "failed" else "completed"
        result = item.get("result") if item.get("error") is None else item.get("error")
        return ToolCalled(
            **self._common(),
            item_id=item_id,
            server=_clip(item["server"], 2_000),
            tool=_clip(item["tool"], 2_000),
            status=status,
            arguments=await self._body(_text(item.get("arguments"))),
            result=await self._body(_text(result)),
        )

    def _plan(self, item_id: str, item: dict[str, Any]) -> PlanUpdated:
        items = [
            TodoItem(text=str(entry["text"])[:500], completed=bool(entry.get("completed")))
            for entry in item["items"]
        ]
        return PlanUpdated(**self._common(), item_id=item_id, items=items)

    async def _notice(self, level: Literal["warning", "error"], message: str) -> CodexNotice:
        return CodexNotice(**self._common(), level=level, message=await self._body(message))

    def _relative(self, path: str) -> str:
        """A workspace path relative to the workspace; anything else as Codex printed it."""
        pure = PurePosixPath(path)
        if pure.is_relative_to(self._workspace):
            return str(pure.relative_to(self._workspace)) or "."
        return path

    def _common(self) -> dict[str, Any]:
        return {**self._envelope(), "run_id": self._run_id}


def _required(value: dict[str, Any] | None, name: str) -> dict[str, Any]:
    if value is None:
        raise Malformed(f"missing {name!r}")
    return value


def _clip(value: object, most: int = 64_000) -> str:
    return str(value)[:most]


_event_check = msgspec.json.Decoder(AnyEvent)


def _check(event: EventBase) -> None:
    """Raise `msgspec.ValidationError` (a `ValueError`) if the event would not decode when read back."""
    _event_check.decode(msgspec.json.encode(event))


def _text(value: object) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def is_step(event: EventBase) -> bool:
    """Whether an event is one of the run's visible steps (for progress counting)."""
    return isinstance(event, AgentMessage | Reasoning | CommandStarted | CommandExecuted | FilesChanged)
