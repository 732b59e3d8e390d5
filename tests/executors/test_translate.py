"""Codex's JSONL output becomes run events; what cannot be understood is quarantined, never dropped."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from executors.scripted import ScriptedModel
from executors.translate import Translator
from schemas import (
    AgentMessage,
    Body,
    CodexNotice,
    CommandExecuted,
    CommandStarted,
    FilesChanged,
    LineQuarantined,
    PlanUpdated,
    Reasoning,
    ToolCalled,
    TurnCompleted,
)
from tests.executors._codex import codex_binary, codex_home, run_codex, write_config

RUN_ID = "run_01JD0000000000000000000000"
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "codex"


def _translator(limit: int = 1000) -> Translator:
    ids = itertools.count()

    def envelope() -> dict[str, Any]:
        return {
            "id": f"evt_01JD{next(ids):022d}",
            "at": datetime(2026, 11, 26, tzinfo=UTC),
            "tenant": "acme",
            "actor": "exe_test",
        }

    async def body(text: str) -> Body:
        return Body(text=text[:limit])

    return Translator(RUN_ID, envelope, body)


async def _feed(translator: Translator, lines: list[str]) -> list[Any]:
    events = []
    for line in lines:
        events.extend(await translator.feed(line.encode()))
    return events


async def test_recorded_edit_run_becomes_step_events() -> None:
    """A recorded real Codex run (apply_patch edits) gives file changes, reasoning, message and usage."""
    translator = _translator()
    events = await _feed(translator, (GOLDEN / "edit.jsonl").read_text().splitlines())
    kinds = [type(event) for event in events]
    assert LineQuarantined not in kinds
    changes = [change for event in events if isinstance(event, FilesChanged) for change in event.changes]
    assert {(change.path, change.kind) for change in changes} == {
        ("greeting.txt", "add"),
        ("src/app.py", "add"),
        ("greeting.txt", "update"),
    }
    assert kinds[-1] is TurnCompleted
    assert translator.outcome.usage.input_tokens == 100 + 140 + 180
    assert translator.outcome.final_message.startswith("Added greeting.txt")
    assert translator.outcome.files == ["greeting.txt", "src/app.py"]


async def test_command_items_and_exit_codes() -> None:
    """A command's start and completion become two events; the outcome keeps its exit code."""
    translator = _translator()
    item = {"id": "item_0", "type": "command_execution", "command": "/bin/sh -lc 'false'"}
    events = await _feed(
        translator,
        [
            json.dumps(
                {"type": "item.started", "item": {**item, "status": "in_progress", "exit_code": None}}
            ),
            json.dumps(
                {
                    "type": "item.completed",
                    "item": {**item, "status": "failed", "exit_code": 1, "aggregated_output": "boom"},
                }
            ),
        ],
    )
    assert [type(event) for event in events] == [CommandStarted, CommandExecuted]
    assert events[1].exit_code == 1
    assert events[1].status == "failed"
    assert events[1].output.text == "boom"
    assert [(c.command, c.exit_code) for c in translator.outcome.commands] == [("/bin/sh -lc 'false'", 1)]


@pytest.mark.parametrize(
    "line",
    [
        "this is not json",
        '{"type": "turn.exploded"}',
        '{"type": "item.completed", "item": {"id": "x", "type": "hologram"}}',
        '{"type": "item.completed", "item": {"id": "x", "type": "command_execution"}}',
        '{"type": "item.completed", "item": {"id": "x", "type": "command_execution", "command": "ls",'
        ' "status": "teleported"}}',
        '{"type": "turn.completed"}',
        '["a", "list"]',
    ],
)
async def test_malformed_lines_are_quarantined_whole(line: str) -> None:
    """Unparseable or unknown output becomes one quarantine event carrying the raw line."""
    translator = _translator()
    [event] = await translator.feed(line.encode())
    assert isinstance(event, LineQuarantined)
    assert event.raw.text == line
    assert event.problem
    assert translator.outcome.quarantined == 1


async def test_turn_failure_and_notices() -> None:
    """A failed turn is remembered for the terminal event; errors become notices, not silence."""
    translator = _translator()
    events = await _feed(
        translator,
        [
            '{"type":"item.completed","item":{"id":"item_0","type":"error","message":"No model metadata"}}',
            '{"type":"error","message":"Reconnecting... 1/5"}',
            '{"type":"turn.failed","error":{"message":"stream disconnected: scripted failure"}}',
        ],
    )
    assert [type(event) for event in events] == [CodexNotice, CodexNotice, CodexNotice]
    assert [event.level for event in events] == ["warning", "error", "error"]
    assert translator.outcome.turn_failed == "stream disconnected: scripted failure"


async def test_other_item_kinds() -> None:
    """Tool calls, web searches, plans and reasoning each have their event."""
    translator = _translator()
    events = await _feed(
        translator,
        [
            '{"type":"item.completed","item":{"id":"a","type":"mcp_tool_call","server":"s","tool":"t",'
            '"arguments":{"q":1},"result":{"ok":true},"status":"completed"}}',
            '{"type":"item.completed","item":{"id":"b","type":"web_search","query":"nats jetstream"}}',
            '{"type":"item.updated","item":{"id":"c","type":"todo_list","items":[{"text":"one","completed":true}]}}',
            '{"type":"item.completed","item":{"id":"d","type":"reasoning","text":"thinking"}}',
        ],
    )
    assert [type(event).__name__ for event in events] == [
        "ToolCalled",
        "WebSearched",
        "PlanUpdated",
        "Reasoning",
    ]
    assert isinstance(events[0], ToolCalled)
    assert json.loads(events[0].arguments.text) == {"q": 1}
    assert isinstance(events[2], PlanUpdated)
    assert events[2].items[0].completed
    assert isinstance(events[3], Reasoning)


async def test_oversized_fields_are_clipped_not_lost() -> None:
    """A command longer than an event allows is clipped; the event still decodes."""
    translator = _translator()
    command = "echo " + "x" * 70_000
    line = json.dumps(
        {"type": "item.started", "item": {"id": "i", "type": "command_execution", "command": command}}
    )
    [event] = await translator.feed(line.encode())
    assert isinstance(event, CommandStarted)
    assert len(event.command) == 64_000


@pytest.mark.parametrize("script", ["hello", "edit", "fail"])
async def test_contract_with_the_pinned_codex(script: str, tmp_path: Path) -> None:
    """Every line the pinned Codex CLI prints for the bundled scripts translates without quarantine.

    When a new Codex version changes the shape of its output, this test fails, not production.
    """
    binary = codex_binary()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    async with ScriptedModel() as model:
        with codex_home(tmp_path) as home:
            write_config(home, model.base_url)
            ran = await run_codex(binary, home, workspace, script, "contract run")
    translator = _translator()
    events = await _feed(translator, [json.dumps(event) for event in ran.events])
    assert not [event for event in events if isinstance(event, LineQuarantined)]
    if script == "fail":
        assert translator.outcome.turn_failed
        assert ran.returncode == 1
    else:
        assert translator.outcome.turns_completed == 1
        assert ran.returncode == 0
        assert any(isinstance(event, AgentMessage) for event in events)
