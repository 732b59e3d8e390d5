"""The scripted model speaks the Responses API to the real `openai` client and the real Codex CLI."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import structlog.testing

from executors.scripted import (
    BUNDLED,
    Fail,
    HttpError,
    Message,
    Respond,
    Script,
    ScriptedModel,
    ScriptError,
    load,
    load_dir,
)
from tests.bus._waits import eventually
from tests.executors._codex import codex_binary, codex_home, run_codex, write_config

HELLO_CMD = "echo hello from codex > hello.txt && cat hello.txt"
EXTRA = {
    "http503": Script(turns=[HttpError(status=503, message="overloaded", code="overloaded")]),
    "slowstart": Script(turns=[Respond(items=[Message(text="late")], delay_ms=200)]),
    "flaky": Script(turns=[Fail(code="rate_limit_exceeded", message="try later")]),
    "dribble": Script(
        turns=[Respond(items=[Message(text="one two three four five")], event_delay_ms=20)] * 2
    ),
}


@pytest.fixture
async def model() -> AsyncIterator[ScriptedModel]:
    async with ScriptedModel(scripts=EXTRA) as server:
        yield server


@pytest.fixture
async def client(model: ScriptedModel) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=model.base_url, api_key="test", max_retries=0) as sdk:
        yield sdk


def _headers(script: str, conversation: str) -> dict[str, str]:
    return {"x-swarm-script": script, "session-id": conversation}


async def _stream(client: openai.AsyncOpenAI, script: str, conversation: str) -> list[Any]:
    stream = await client.responses.create(
        model="gpt-5.5", input="hi", stream=True, extra_headers=_headers(script, conversation)
    )
    return [event async for event in stream]


async def _create(client: openai.AsyncOpenAI, script: str, conversation: str) -> Any:
    return await client.responses.create(
        model="gpt-5.5", input="hi", extra_headers=_headers(script, conversation)
    )


def _without_runs(types: list[str]) -> list[str]:
    """Event types with repeated deltas collapsed to one, so the order can be compared exactly."""
    return [kind for index, kind in enumerate(types) if index == 0 or types[index - 1] != kind]


async def test_stream_has_the_real_event_order_and_final_output(client: openai.AsyncOpenAI) -> None:
    """A streamed tool-call turn emits the Responses API events in order and ends with output and usage."""
    events = await _stream(client, "hello", "c1")
    assert _without_runs([event.type for event in events]) == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response
    call = final.output[1]
    assert (call.type, call.name, json.loads(call.arguments)) == (
        "function_call", "exec_command", {"cmd": HELLO_CMD, "yield_time_ms": 30000}
    )  # fmt: skip
    assert final.usage.input_tokens == 100
    assert final.usage.output_tokens_details.reasoning_tokens == 5
    assert final.usage.total_tokens == 120


async def test_streamed_message_deltas_join_to_the_text(client: openai.AsyncOpenAI) -> None:
    """A message turn streams several text deltas that join to the scripted text (SDK stream helper)."""
    await _stream(client, "hello", "c1")
    headers = _headers("hello", "c1")
    async with client.responses.stream(model="gpt-5.5", input="hi", extra_headers=headers) as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert len(deltas) > 1
    assert "".join(deltas) == final.output_text == "Created hello.txt with the greeting. All done."
    assert (final.usage.input_tokens_details.cached_tokens, final.usage.output_tokens) == (100, 12)


async def test_non_streaming_returns_the_same_final_output(client: openai.AsyncOpenAI) -> None:
    """`stream: false` answers the response object that a stream's `response.completed` carries."""
    streamed = (await _stream(client, "edit", "streamed"))[-1].response
    created = await _create(client, "edit", "plain")
    assert created.status == streamed.status == "completed"
    assert [item.input for item in created.output] == [item.input for item in streamed.output]
    assert created.output[0].input.startswith("*** Begin Patch\n*** Add File: greeting.txt")
    assert created.usage == streamed.usage


async def test_fail_turn_streams_response_failed(client: openai.AsyncOpenAI) -> None:
    """A `fail` turn ends the stream in `response.failed` with the scripted error; the SDK does not raise."""
    events = await _stream(client, "flaky", "f1")
    assert [event.type for event in events] == ["response.created", "response.in_progress", "response.failed"]
    failed = events[-1].response
    assert (failed.status, failed.error.code, failed.error.message) == (
        "failed",
        "rate_limit_exceeded",
        "try later",
    )


async def test_fail_turn_without_streaming_returns_a_failed_response(client: openai.AsyncOpenAI) -> None:
    """Without streaming, a `fail` turn is a response object with status `failed` and the error."""
    failed = await _create(client, "fail", "f2")
    assert (failed.status, failed.error.message, failed.output) == ("failed", "scripted failure for test", [])


@pytest.mark.parametrize("stream", [True, False])
async def test_http_error_turn_raises_api_status_error(client: openai.AsyncOpenAI, stream: bool) -> None:
    """An `http_error` turn is an HTTP error the SDK raises as `APIStatusError` with the status and body."""
    with pytest.raises(openai.APIStatusError) as caught:
        await client.responses.create(
            model="gpt-5.5", input="hi", stream=stream, extra_headers=_headers("http503", "h1")
        )
    assert caught.value.status_code == 503
    assert caught.value.code == "overloaded"
    assert "overloaded" in caught.value.message


async def test_unknown_script_is_a_400_naming_the_known_ones(client: openai.AsyncOpenAI) -> None:
    """A request for a script the server does not have is refused, listing the scripts it has."""
    with pytest.raises(openai.BadRequestError, match=r"unknown script 'nope'.*hello"):
        await _create(client, "nope", "u1")


async def test_conversations_keep_their_own_turns(client: openai.AsyncOpenAI, model: ScriptedModel) -> None:
    """Interleaved conversations (by `session-id` or `x-swarm-run`) each play their script from the start."""
    run_b = {"x-swarm-script": "edit", "x-swarm-run": "b"}
    a0 = await _create(client, "hello", "a")
    b0 = await client.responses.create(model="gpt-5.5", input="hi", extra_headers=run_b)
    a1 = await _create(client, "hello", "a")
    b1 = await client.responses.create(model="gpt-5.5", input="hi", extra_headers=run_b)
    assert [a0.output[1].name, a1.output_text] == [
        "exec_command",
        "Created hello.txt with the greeting. All done.",
    ]
    assert [b0.output[0].name, b1.output[1].name] == ["apply_patch", "apply_patch"]
    assert [request.turn for request in model.requests_for("a")] == [0, 1]
    assert [request.script for request in model.requests_for("b")] == ["edit", "edit"]


async def test_a_finished_script_answers_script_finished(client: openai.AsyncOpenAI) -> None:
    """Requests past the end of a script get a final "script finished" message instead of hanging."""
    await _create(client, "fail", "done")
    assert (await _create(client, "fail", "done")).output_text == "script finished"
    assert (
        "".join(e.delta for e in await _stream(client, "fail", "done") if hasattr(e, "delta"))
        == "script finished"
    )


async def test_delay_holds_back_the_answer(client: openai.AsyncOpenAI) -> None:
    """A turn's `delay_ms` passes before the answer arrives."""
    started = time.monotonic()
    assert (await _create(client, "slowstart", "d1")).output_text == "late"
    assert time.monotonic() - started >= 0.2


async def test_requests_are_recorded_and_listed(client: openai.AsyncOpenAI, model: ScriptedModel) -> None:
    """Every request is kept with its headers and body, and `GET /v1/_scripted/requests` lists them."""
    assert [entry.id for entry in (await client.models.list()).data] == ["gpt-5.5"]
    await _create(client, "hello", "r1")
    async with aiohttp.ClientSession() as http, http.get(f"{model.base_url}/_scripted/requests") as answer:
        listed = await answer.json()
    assert [(entry["method"], entry["path"]) for entry in listed] == [
        ("GET", "/v1/models"),
        ("POST", "/v1/responses"),
    ]
    assert listed[1]["headers"]["session-id"] == "r1"
    assert listed[1]["body"]["input"] == "hi"
    assert model.requests[1].body == listed[1]["body"]


async def test_a_client_hanging_up_mid_stream_is_tolerated(model: ScriptedModel) -> None:
    """A client that closes the stream early ends that answer quietly; the conversation goes on."""
    headers = {"x-swarm-script": "dribble", "x-swarm-run": "gone"}
    body = {"model": "gpt-5.5", "input": "hi", "stream": True}
    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{model.base_url}/responses", json=body, headers=headers) as answer:
                assert (await answer.content.readline()).startswith(b"event: response.created")
            await eventually(lambda: _logged(logs, "scripted_client_hung_up"))
            async with http.post(f"{model.base_url}/responses", json=body, headers=headers) as answer:
                assert b"event: response.completed" in await answer.read()
    assert [request.turn for request in model.requests_for("gone")] == [0, 1]


async def _logged(logs: list[dict[str, Any]], event: str) -> bool:
    return any(entry["event"] == event for entry in logs)


def test_bundled_scripts_load() -> None:
    """Every bundled script is valid, and the ones the tests and demo rely on are there."""
    assert {"hello", "edit", "fail", "slow"} <= set(load_dir(BUNDLED))


@pytest.mark.parametrize(
    ("turn", "problem"),
    [
        ({"kind": "respond", "items": [{"kind": "message", "text": "x", "colour": "red"}]}, "`colour`"),
        ({"kind": "respond", "items": [{"kind": "teleport"}]}, "'teleport'"),
        ({"kind": "dance"}, "'dance'"),
        ({"kind": "http_error", "status": 200}, ">= 400"),
    ],
)
def test_a_bad_script_names_the_file_and_the_field(
    tmp_path: Path, turn: dict[str, Any], problem: str
) -> None:
    """Unknown fields, unknown kinds and out-of-range values fail on load with the file and JSON path."""
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"turns": [turn]}))
    with pytest.raises(ScriptError) as caught:
        load(path)
    assert str(path) in str(caught.value)
    assert problem in caught.value.problem
    assert "$.turns[0]" in caught.value.problem


@pytest.fixture
def codex() -> Path:
    return codex_binary()


@pytest.fixture
def home(tmp_path: Path, model: ScriptedModel) -> Iterator[Path]:
    with codex_home(tmp_path) as directory:
        write_config(directory, model.base_url)
        yield directory


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    directory = tmp_path / "workspace"
    directory.mkdir()
    return directory


async def test_codex_runs_a_command_from_the_hello_script(
    codex: Path, home: Path, workspace: Path, model: ScriptedModel
) -> None:
    """Real Codex runs the scripted command, reports message and summed usage, and sends the output back."""
    run = await run_codex(codex, home, workspace, "hello", "Create hello.txt")
    assert run.returncode == 0, run.stderr
    thread = run.last("thread.started")["thread_id"]
    [command] = run.completed("command_execution")
    assert (command["exit_code"], command["status"]) == (0, "completed")
    assert [m["text"] for m in run.completed("agent_message")] == [
        "Created hello.txt with the greeting. All done."
    ]
    assert run.completed("reasoning")[0]["text"].startswith("**Planning**")
    assert run.last("turn.completed")["usage"] == {
        "input_tokens": 250, "cached_input_tokens": 100, "cache_write_input_tokens": 0,
        "output_tokens": 32, "reasoning_output_tokens": 5,
    }  # fmt: skip
    assert (workspace / "hello.txt").read_text() == "hello from codex\n"
    first, second = model.requests_for(thread)
    assert (first.turn, second.turn, second.script) == (0, 1, "hello")
    outputs = [item for item in second.body["input"] if item.get("type") == "function_call_output"]
    assert "Process exited with code 0" in outputs[0]["output"]


async def test_codex_applies_the_patches_of_the_edit_script(
    codex: Path, home: Path, workspace: Path, model: ScriptedModel
) -> None:
    """Real Codex applies scripted `apply_patch` calls (add, then update) and reports them as file changes."""
    run = await run_codex(codex, home, workspace, "edit", "Add a greeting")
    assert run.returncode == 0, run.stderr
    changes = [change["kind"] for item in run.completed("file_change") for change in item["changes"]]
    assert changes == ["add", "add", "update"]
    assert (workspace / "greeting.txt").read_text() == "hello\nswarm\n"
    assert (workspace / "src" / "app.py").read_text() == 'print("hello")\n'
    assert len(model.requests_for(run.last("thread.started")["thread_id"])) == 3


async def test_codex_fails_the_turn_on_response_failed(codex: Path, home: Path, workspace: Path) -> None:
    """A scripted `response.failed` makes Codex exit 1 with `turn.failed` carrying the scripted message."""
    run = await run_codex(codex, home, workspace, "fail", "Do something")
    assert run.returncode == 1
    assert run.types()[-1] == "turn.failed"
    assert "scripted failure for test" in run.last("turn.failed")["error"]["message"]
