"""Pure rendering of a scripted turn into Responses API objects and stream events.

Shapes follow the real API (and what Codex 0.169 parses, see shared/notes/codex-offline.md §2.2-2.4):
every stream opens with `response.created` and `response.in_progress`, brackets each output item with
`response.output_item.added` / `.done` around its delta events, and ends in `response.completed` or
`response.failed`. Sequence numbers are added when the events are written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, assert_never

from executors.scripted.script import (
    ApplyPatch,
    ExecCommand,
    Fail,
    FunctionCall,
    Item,
    JsonAnswer,
    Message,
    Reasoning,
    Respond,
    Usage,
)

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Context:
    """What one response echoes: its id, the model asked for, the request's tool settings, the time."""

    response_id: str
    model: str
    created_at: int
    tools: list[Any]
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True


def response(ctx: Context, status: str, output: list[Json], usage: Usage | None, error: Json | None) -> Json:
    """The response object as `response.*` events and non-streaming answers carry it."""
    return {
        "id": ctx.response_id,
        "object": "response",
        "created_at": ctx.created_at,
        "status": status,
        "error": error,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "model": ctx.model,
        "output": output,
        "parallel_tool_calls": ctx.parallel_tool_calls,
        "tool_choice": ctx.tool_choice,
        "tools": ctx.tools,
        "usage": None if usage is None else usage_json(usage),
    }


def usage_json(usage: Usage) -> Json:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def error_json(turn: Fail) -> Json:
    return {"code": turn.code, "message": turn.message}


def outputs(ctx: Context, turn: Respond) -> list[Json]:
    """The final (completed) output items of a turn, with ids derived from the response id."""
    return [item_json(item, _item_id(ctx, index)) for index, item in enumerate(turn.items)]


def final(ctx: Context, turn: Respond | Fail) -> Json:
    """The non-streaming answer: the response object as it stands when the turn is over."""
    if isinstance(turn, Fail):
        return response(ctx, "failed", [], None, error_json(turn))
    return response(ctx, "completed", outputs(ctx, turn), turn.usage, None)


def events(ctx: Context, turn: Respond | Fail) -> list[Json]:
    """The whole event stream of a turn, in order."""
    opening = response(ctx, "in_progress", [], None, None)
    head = [_event("response.created", response=opening), _event("response.in_progress", response=opening)]
    if isinstance(turn, Fail):
        return [*head, _event("response.failed", response=final(ctx, turn))]
    body = [event for index, item in enumerate(turn.items) for event in _item_events(ctx, item, index)]
    return [*head, *body, _event("response.completed", response=final(ctx, turn))]


def item_json(item: Item, suffix: str) -> Json:
    """One completed output item, shaped as the Responses API returns it."""
    match item:
        case ExecCommand():
            return _call(suffix, "exec_command", _exec_arguments(item))
        case FunctionCall(name=name, arguments=arguments):
            return _call(suffix, name, json.dumps(arguments))
        case ApplyPatch(patch=patch):
            return {
                "type": "custom_tool_call",
                "id": f"ctc_{suffix}",
                **_called(suffix, "apply_patch"),
                "input": patch,
            }
        case Reasoning(summary=summary):
            return {"type": "reasoning", "id": f"rs_{suffix}", "summary": [_summary_part(summary)]}
        case Message(text=text):
            return {"type": "message", "id": f"msg_{suffix}", **_assistant(), "content": [_text_part(text)]}
        case JsonAnswer(value=value):
            return item_json(Message(text=json.dumps(value)), suffix)
        case _:
            assert_never(item)


def _item_events(ctx: Context, item: Item, index: int) -> list[Json]:
    done = item_json(item, _item_id(ctx, index))
    where = {"item_id": done["id"], "output_index": index}
    added = _event("response.output_item.added", output_index=index, item=_in_progress(done))
    middle = _deltas(item, done, where)
    return [added, *middle, _event("response.output_item.done", output_index=index, item=done)]


def _deltas(item: Item, done: Json, where: Json) -> list[Json]:
    match item:
        case ExecCommand() | FunctionCall():
            return _argument_events(done["arguments"], where)
        case ApplyPatch(patch=patch):
            pieces = patch.splitlines(keepends=True)
            deltas = [_event("response.custom_tool_call_input.delta", **where, delta=p) for p in pieces]
            return [*deltas, _event("response.custom_tool_call_input.done", **where, input=patch)]
        case Reasoning(summary=summary):
            return _summary_events(summary, {**where, "summary_index": 0})
        case Message(text=text):
            return _text_events(text, {**where, "content_index": 0})
        case JsonAnswer(value=value):
            return _text_events(json.dumps(value), {**where, "content_index": 0})
        case _:
            assert_never(item)


def _argument_events(arguments: str, where: Json) -> list[Json]:
    half = len(arguments) // 2
    deltas = [
        _event("response.function_call_arguments.delta", **where, delta=d) for d in _halves(arguments, half)
    ]
    return [*deltas, _event("response.function_call_arguments.done", **where, arguments=arguments)]


def _summary_events(summary: str, where: Json) -> list[Json]:
    deltas = [_event("response.reasoning_summary_text.delta", **where, delta=w) for w in _words(summary)]
    return [
        _event("response.reasoning_summary_part.added", **where, part=_summary_part("")),
        *deltas,
        _event("response.reasoning_summary_text.done", **where, text=summary),
        _event("response.reasoning_summary_part.done", **where, part=_summary_part(summary)),
    ]


def _text_events(text: str, where: Json) -> list[Json]:
    deltas = [_event("response.output_text.delta", **where, delta=w, logprobs=[]) for w in _words(text)]
    return [
        _event("response.content_part.added", **where, part=_text_part("")),
        *deltas,
        _event("response.output_text.done", **where, text=text, logprobs=[]),
        _event("response.content_part.done", **where, part=_text_part(text)),
    ]


def _in_progress(done: Json) -> Json:
    """The item as `output_item.added` announces it: nothing generated yet."""
    empties: dict[str, Json] = {
        "function_call": {"arguments": "", "status": "in_progress"},
        "custom_tool_call": {"input": "", "status": "in_progress"},
        "message": {"content": [], "status": "in_progress"},
        "reasoning": {"summary": []},
    }
    return {**done, **empties[done["type"]]}


def _call(suffix: str, name: str, arguments: str) -> Json:
    return {"type": "function_call", "id": f"fc_{suffix}", **_called(suffix, name), "arguments": arguments}


def _called(suffix: str, name: str) -> Json:
    return {"call_id": f"call_{suffix}", "name": name, "status": "completed"}


def _assistant() -> Json:
    return {"role": "assistant", "status": "completed"}


def _exec_arguments(item: ExecCommand) -> str:
    arguments: Json = {"cmd": item.cmd, "yield_time_ms": item.yield_time_ms}
    if item.workdir is not None:
        arguments["workdir"] = item.workdir
    return json.dumps(arguments)


def _text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _summary_part(text: str) -> Json:
    return {"type": "summary_text", "text": text}


def _item_id(ctx: Context, index: int) -> str:
    return f"{ctx.response_id.removeprefix('resp_')}_{index}"


def _event(kind: str, **fields: Any) -> Json:
    return {"type": kind, **fields}


def _words(text: str) -> list[str]:
    """`text` cut after each run of whitespace; the pieces join back to exactly `text`."""
    return [piece for piece in re.findall(r"\S*\s*", text) if piece]


def _halves(text: str, at: int) -> list[str]:
    return [piece for piece in (text[:at], text[at:]) if piece]
