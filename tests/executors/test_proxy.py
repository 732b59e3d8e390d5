"""The model proxy: per-run sockets and tokens in front of the real scripted model; real Codex through it."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import openai
import pytest
import structlog.testing

from executors.proxy import (
    BadRunId,
    BudgetExceeded,
    Grant,
    ModelCall,
    ModelProxy,
    Report,
    RunAlreadyOpen,
    SandboxBroken,
    Upstream,
)
from executors.proxy._inspect import SseScanner
from executors.scripted import Message, Respond, Script, ScriptedModel
from executors.scripted import Usage as ScriptUsage
from schemas import Usage
from tests.bus._waits import eventually
from tests.executors._codex import codex_binary, codex_home, run_codex, write_config

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
TOKEN_ENV = "SWARM_MODEL_TOKEN"
HELLO_TURN_0 = Usage(input_tokens=100, cached_input_tokens=0, output_tokens=20, reasoning_output_tokens=5)
HELLO_TURN_1 = Usage(input_tokens=150, cached_input_tokens=100, output_tokens=12, reasoning_output_tokens=0)
EXTRA = {
    "stall": Script(turns=[Respond(items=[Message(text="too late")], delay_ms=800)]),
    "pause": Script(turns=[Respond(items=[Message(text="one two")], event_delay_ms=400)]),
    "decoy": Script(  # a text delta naming the terminal event type must not be taken for it
        turns=[
            Respond(
                items=[Message(text="see event: response.completed in the docs")],
                usage=ScriptUsage(input_tokens=7, output_tokens=3),
            )
        ]
    ),
    "dribble": Script(
        turns=[Respond(items=[Message(text="one two three four five six")], event_delay_ms=50)]
    ),
}
R = TypeVar("R")


class Reports:
    """The `on_report` callback of a run: keeps every report in order."""

    def __init__(self) -> None:
        self.items: list[Report] = []

    async def __call__(self, report: Report) -> None:
        self.items.append(report)

    def of(self, kind: type[R]) -> list[R]:
        return [item for item in self.items if isinstance(item, kind)]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: a unix socket path must stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="proxy-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def model() -> AsyncIterator[ScriptedModel]:
    async with ScriptedModel(scripts=EXTRA) as server:
        yield server


@pytest.fixture
async def proxy(model: ScriptedModel, socket_dir: Path) -> AsyncIterator[ModelProxy]:
    async with ModelProxy(Upstream(model.base_url, api_key=UPSTREAM_KEY), socket_dir) as server:
        yield server


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
async def grant(proxy: ModelProxy, reports: Reports) -> Grant:
    return await proxy.open_run("run-a", max_tokens=None, on_report=reports)


@asynccontextmanager
async def over_socket(path: Path) -> AsyncIterator[httpx2.AsyncClient]:
    """A raw HTTP client whose every request goes to the unix socket `path`."""
    transport = httpx2.AsyncHTTPTransport(uds=str(path))
    async with httpx2.AsyncClient(transport=transport, base_url="http://proxy") as client:
        yield client


@asynccontextmanager
async def sdk(grant: Grant) -> AsyncIterator[openai.AsyncOpenAI]:
    """The real `openai` client, talking to the proxy over the grant's unix socket."""
    http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(grant.socket)))
    async with openai.AsyncOpenAI(
        base_url="http://proxy/v1", api_key=grant.token, http_client=http, max_retries=0
    ) as client:
        yield client


def body(**extra: Any) -> dict[str, Any]:
    """A streamed Responses request body."""
    return {"model": "gpt-5.5", "input": "hi", "stream": True, **extra}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def same_clock(raw: bytes) -> bytes:
    """`raw` with its `created_at` stamps zeroed (two servers may answer in different seconds)."""
    return re.sub(rb'"created_at": ?\d+', b'"created_at": 0', raw)


def calls(reports: Reports) -> list[ModelCall]:
    return reports.of(ModelCall)


async def _streamed(client: openai.AsyncOpenAI) -> list[dict[str, Any]]:
    """The events of one streamed `hello` turn, as JSON with the clock zeroed."""
    stream = await client.responses.create(model="gpt-5.5", input="hi", stream=True)
    return [json.loads(same_clock(event.model_dump_json().encode())) async for event in stream]


async def test_openai_client_streams_through_the_proxy_unchanged(grant: Grant) -> None:
    """The `openai` client gets the same events through the proxy as directly from an identical upstream."""
    async with ScriptedModel() as twin, sdk(grant) as proxied:
        async with openai.AsyncOpenAI(base_url=twin.base_url, api_key="direct", max_retries=0) as direct:
            fetched = await _streamed(direct)
        through = await _streamed(proxied)
    assert through == fetched
    assert through[-1]["type"] == "response.completed"


async def test_raw_stream_bytes_pass_unchanged_and_are_recorded(grant: Grant, reports: Reports) -> None:
    """The SSE bytes a client reads through the proxy equal the upstream's and the recorded response body."""
    async with ScriptedModel() as twin, over_socket(grant.socket) as client, httpx2.AsyncClient() as plain:
        proxied = await client.post("/v1/responses", json=body(), headers=bearer(grant.token))
        direct = await plain.post(f"{twin.base_url}/responses", json=body())
    assert proxied.status_code == direct.status_code == 200
    assert proxied.headers["content-type"] == "text/event-stream"
    assert same_clock(proxied.content) == same_clock(direct.content)
    [call] = calls(reports)
    assert call.response_body == proxied.content
    assert json.loads(call.request_body) == body()


@pytest.mark.parametrize("size", [1, 7, 100, 1_000_000])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
async def test_usage_is_found_however_the_stream_is_cut(
    model: ScriptedModel, size: int, newline: bytes
) -> None:
    """The stream scanner finds the final model and usage whatever the chunk boundaries and line ends."""
    expected = {"hello": HELLO_TURN_0, "decoy": Usage(input_tokens=7, output_tokens=3)}
    for script, usage in expected.items():
        async with httpx2.AsyncClient() as plain:
            headers = {"x-swarm-script": script}
            raw = (await plain.post(f"{model.base_url}/responses", json=body(), headers=headers)).content
        data, scanner = raw.replace(b"\n", newline), SseScanner()
        for start in range(0, len(data), size):
            scanner.feed(data[start : start + size])
        scanner.finish()
        assert scanner.final is not None
        assert (scanner.final.model, scanner.final.tokens()) == ("gpt-5.5", usage)


async def test_model_call_records_model_usage_and_bodies(grant: Grant, reports: Reports) -> None:
    """Streamed and non-streamed calls are reported with model, usage, status, latency and both bodies."""
    async with sdk(grant) as client:
        streamed = await _streamed(client)
        created = await client.responses.create(model="gpt-5.5", input="again")
    first, second = calls(reports)
    assert (first.run_id, first.path, first.model, first.status) == ("run-a", "/v1/responses", "gpt-5.5", 200)
    assert first.usage == HELLO_TURN_0
    assert second.usage == HELLO_TURN_1
    assert b"response.completed" in first.response_body
    assert json.loads(second.response_body)["id"] == created.id
    assert json.loads(second.request_body)["input"] == "again"
    assert first.started_at.tzinfo is not None
    assert first.started_at <= second.started_at
    assert first.latency_ms >= 0
    assert first.error == second.error == ""
    assert streamed[-1]["response"]["usage"]["input_tokens"] == 100


async def test_upstream_gets_its_key_and_never_the_run_token(
    grant: Grant, model: ScriptedModel, reports: Reports
) -> None:
    """Upstream sees the upstream key and the run id, not the token; the client side never sees the key."""
    codex_headers = {"session-id": "s1", "x-codex-turn-metadata": "{}", "x-other": "dropped"}
    with structlog.testing.capture_logs() as logs:
        async with over_socket(grant.socket) as client:
            answer = await client.post(
                "/v1/responses", json=body(), headers={**bearer(grant.token), **codex_headers}
            )
    [seen] = model.requests
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert (seen.headers["x-swarm-run"], seen.headers["session-id"]) == ("run-a", "s1")
    assert seen.headers["x-codex-turn-metadata"] == "{}"
    assert "x-other" not in seen.headers
    assert not any(grant.token in value for value in seen.headers.values())
    client_side = str(answer.headers).encode() + answer.content + calls(reports)[0].response_body
    assert UPSTREAM_KEY.encode() not in client_side
    assert logs
    assert not any(secret in str(logs) for secret in (UPSTREAM_KEY, grant.token))


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "{token}", "Basic {token}"])
async def test_wrong_or_missing_token_is_401_and_upstream_not_called(
    grant: Grant, model: ScriptedModel, reports: Reports, authorization: str | None
) -> None:
    """Without this run's bearer token the answer is an OpenAI-style 401, and nothing goes upstream."""
    headers = {} if authorization is None else {"Authorization": authorization.format(token=grant.token)}
    async with over_socket(grant.socket) as client:
        answer = await client.post("/v1/responses", json=body(), headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"
    assert set(answer.json()["error"]) >= {"message", "type", "code"}
    assert model.requests == []
    assert reports.items == []


async def test_budget_is_reported_once_then_requests_are_refused(
    proxy: ModelProxy, model: ScriptedModel, reports: Reports
) -> None:
    """The call taking a run to its limit is reported once; later requests get 429 without going upstream."""
    grant = await proxy.open_run("run-b", max_tokens=200, on_report=reports)
    async with sdk(grant) as client:
        await client.responses.create(model="gpt-5.5", input="one")  # 120 tokens: under the limit
        assert reports.of(BudgetExceeded) == []
        await client.responses.create(model="gpt-5.5", input="two")  # 282 tokens: over it
        for _ in range(2):
            with pytest.raises(openai.RateLimitError) as refused:
                await client.responses.create(model="gpt-5.5", input="three")
            assert (refused.value.status_code, refused.value.type) == (429, "budget_exceeded")
    assert reports.of(BudgetExceeded) == [BudgetExceeded(run_id="run-b", used=282, limit=200)]
    assert isinstance(reports.items[-1], BudgetExceeded)
    assert len(model.requests) == len(calls(reports)) == 2


def _tool_output(output: Any, kind: str) -> list[dict[str, Any]]:
    call = {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": "{}"}
    return [call, {"type": kind, "call_id": "call_1", "output": output}]


async def test_sandbox_failure_in_tool_output_is_reported_once(grant: Grant, reports: Reports) -> None:
    """A bwrap failure in a tool output is reported once per run; the same words in a message are not."""
    failure = "Chunk ID: 1\nOutput:\nbwrap: setting up uid map: Permission denied\n"
    async with over_socket(grant.socket) as client:
        mentioned = body(input=[{"role": "user", "content": "why does bwrap: fail?"}])
        await client.post("/v1/responses", json=mentioned, headers=bearer(grant.token))
        assert reports.of(SandboxBroken) == []
        for kind, output in [
            ("function_call_output", failure),
            ("custom_tool_call_output", failure),
            ("function_call_output", [{"type": "input_text", "text": failure}]),
        ]:
            carrying = body(input=_tool_output(output, kind))
            await client.post("/v1/responses", json=carrying, headers=bearer(grant.token))
    assert reports.of(SandboxBroken) == [
        SandboxBroken(run_id="run-a", detail="bwrap: setting up uid map: Permission denied")
    ]
    assert isinstance(reports.items[1], SandboxBroken)  # before the call that carried it


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_upstream_down_is_a_502_and_a_recorded_call(socket_dir: Path, reports: Reports) -> None:
    """An unreachable upstream gives the client a 502 OpenAI-style error and is reported with that status."""
    upstream = Upstream(f"http://127.0.0.1:{_free_port()}/v1", api_key=UPSTREAM_KEY, timeout=5)
    async with ModelProxy(upstream, socket_dir) as proxy:
        grant = await proxy.open_run("run-down", max_tokens=None, on_report=reports)
        async with over_socket(grant.socket) as client:
            answer = await client.post("/v1/responses", json=body(), headers=bearer(grant.token))
    assert answer.status_code == 502
    assert (answer.json()["error"]["type"], answer.json()["error"]["code"]) == (
        "upstream_error",
        "upstream_unreachable",
    )
    [call] = calls(reports)
    assert (call.status, call.model, call.usage, call.response_body) == (
        502,
        "gpt-5.5",
        Usage(),
        answer.content,
    )
    assert call.error.startswith("upstream_unreachable")


async def test_upstream_too_slow_is_a_504(model: ScriptedModel, socket_dir: Path, reports: Reports) -> None:
    """An upstream that does not answer within the timeout gives a 504 and a call recorded with it."""
    async with ModelProxy(Upstream(model.base_url, timeout=0.2), socket_dir) as proxy:
        grant = await proxy.open_run("run-slow", max_tokens=None, on_report=reports)
        async with over_socket(grant.socket) as client:
            headers = {**bearer(grant.token), "x-swarm-script": "stall"}
            answer = await client.post("/v1/responses", json=body(), headers=headers)
    assert (answer.status_code, answer.json()["error"]["code"]) == (504, "upstream_timeout")
    assert [call.status for call in calls(reports)] == [504]


async def test_an_upstream_stalling_mid_stream_ends_the_stream_and_is_recorded(
    model: ScriptedModel, socket_dir: Path, reports: Reports
) -> None:
    """An upstream silent mid-stream for longer than the timeout ends the stream; the call says why."""
    async with ModelProxy(Upstream(model.base_url, timeout=0.2), socket_dir) as proxy:
        grant = await proxy.open_run("run-pause", max_tokens=None, on_report=reports)
        async with over_socket(grant.socket) as client:
            headers = {**bearer(grant.token), "x-swarm-script": "pause"}
            answer = await client.post("/v1/responses", json=body(), headers=headers)
    assert answer.status_code == 200
    assert answer.content.startswith(b"event: response.created")
    assert b"response.completed" not in answer.content
    [call] = calls(reports)
    assert (call.status, call.response_body) == (200, answer.content)
    assert call.error.startswith("upstream stream broke")


async def test_close_run_removes_the_socket_and_refuses_connections(
    proxy: ModelProxy, reports: Reports
) -> None:
    """After close_run the socket is gone, both listeners refuse connections, and closing again is fine."""
    grant = await proxy.open_run("run-c", max_tokens=None, on_report=reports, tcp=True)
    assert grant.base_url is not None
    async with over_socket(grant.socket) as client:
        assert (await client.get("/v1/models", headers=bearer(grant.token))).status_code == 200
        await proxy.close_run("run-c")
        assert not grant.socket.exists()
        assert not grant.socket.parent.exists()
        with pytest.raises(httpx2.ConnectError):
            await client.get("/v1/models", headers=bearer(grant.token))
    async with httpx2.AsyncClient() as plain:
        with pytest.raises(httpx2.ConnectError):
            await plain.get(f"{grant.base_url}/models", headers=bearer(grant.token))
    await proxy.close_run("run-c")


async def test_close_run_cuts_a_stream_in_flight_after_the_grace_period(
    model: ScriptedModel, socket_dir: Path, reports: Reports
) -> None:
    """A stream still running when its run is closed is cut after the grace period and recorded first."""
    async with ModelProxy(Upstream(model.base_url), socket_dir, shutdown_timeout=0.1) as proxy:
        grant = await proxy.open_run("run-cut", max_tokens=None, on_report=reports)
        headers = {**bearer(grant.token), "x-swarm-script": "dribble"}
        async with (
            over_socket(grant.socket) as client,
            client.stream("POST", "/v1/responses", json=body(), headers=headers) as answer,
        ):
            lines = answer.aiter_lines()
            assert await anext(lines) == "event: response.created"
            async with asyncio.timeout(5):
                await proxy.close_run("run-cut")
            [call] = calls(reports)  # reported before close_run returned
            with pytest.raises(httpx2.RemoteProtocolError):
                async for _ in lines:
                    pass
    assert call.error.startswith("cut")
    assert call.response_body.startswith(b"event: response.created")


async def test_runs_are_isolated(proxy: ModelProxy, reports: Reports) -> None:
    """A run's token is refused on another run's socket and TCP port, and accepted on its own."""
    a = await proxy.open_run("run-a", max_tokens=None, on_report=reports)
    b = await proxy.open_run("run-b", max_tokens=None, on_report=reports, tcp=True)
    async with over_socket(b.socket) as client, httpx2.AsyncClient() as plain:
        assert (await client.get("/v1/models", headers=bearer(a.token))).status_code == 401
        assert (await plain.get(f"{b.base_url}/models", headers=bearer(a.token))).status_code == 401
        assert (await client.get("/v1/models", headers=bearer(b.token))).status_code == 200
        assert (await plain.get(f"{b.base_url}/models", headers=bearer(b.token))).status_code == 200
    assert a.token != b.token
    assert [call.run_id for call in calls(reports)] == ["run-b", "run-b"]


async def test_open_run_makes_a_socket_any_uid_can_use_and_checks_the_id(
    proxy: ModelProxy, grant: Grant, socket_dir: Path, reports: Reports
) -> None:
    """The run's directory is 0755 and its socket 0666; a reused or path-like run id is refused."""
    assert grant.socket == socket_dir / "run-a" / "model.sock"
    assert (grant.socket.parent.stat().st_mode & 0o777, grant.socket.stat().st_mode & 0o777) == (0o755, 0o666)
    assert grant.base_url is None
    with pytest.raises(RunAlreadyOpen):
        await proxy.open_run("run-a", max_tokens=None, on_report=reports)
    for bad in ("../escape", "a/b", ".hidden", "", "x" * 200, "x" * 100):  # the last: socket path too long
        with pytest.raises(BadRunId):
            await proxy.open_run(bad, max_tokens=None, on_report=reports)


async def test_other_v1_paths_are_forwarded_and_the_rest_refused(
    grant: Grant, model: ScriptedModel, reports: Reports
) -> None:
    """Any `/v1/...` path goes upstream as it is; paths outside `/v1/` or climbing out of it get a 404."""
    async with sdk(grant) as client:
        assert [entry.id for entry in (await client.models.list()).data] == ["gpt-5.5"]
    async with over_socket(grant.socket) as raw:
        outside = await raw.get("/_scripted/requests", headers=bearer(grant.token))
        climbing = await raw.get("/v1/%2e%2e/v1/_scripted/requests", headers=bearer(grant.token))
    assert (outside.status_code, climbing.status_code) == (404, 404)
    assert outside.json()["error"]["code"] == "not_found"
    assert [(seen.method, seen.path) for seen in model.requests] == [("GET", "/v1/models")]
    assert [(call.path, call.status, call.model) for call in calls(reports)] == [("/v1/models", 200, "")]


async def test_a_failing_callback_breaks_neither_the_answer_nor_the_proxy(proxy: ModelProxy) -> None:
    """When on_report raises, the client still gets its whole answer, later calls work, and it is logged."""

    async def broken(report: Report) -> None:
        raise RuntimeError("event log down")

    grant = await proxy.open_run("run-d", max_tokens=None, on_report=broken)
    with structlog.testing.capture_logs() as logs:
        async with sdk(grant) as client:
            first = await _streamed(client)
            second = await client.responses.create(model="gpt-5.5", input="again")
    assert first[-1]["type"] == "response.completed"
    assert second.output_text == "Created hello.txt with the greeting. All done."
    assert [entry["event"] for entry in logs].count("proxy_report_failed") == 2


async def _hang_up_after(grant: Grant, marker: bytes, script: str) -> bytes:
    """Send a streamed request over a bare connection, read up to the end of the event `marker`, hang up."""
    payload = json.dumps(body()).encode()
    head = (
        f"POST /v1/responses HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {grant.token}\r\n"
        f"x-swarm-script: {script}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_unix_connection(str(grant.socket))
    writer.write(head.encode() + payload)
    async with asyncio.timeout(10):
        seen = await reader.readuntil(marker)
        seen += await reader.readuntil(b"\n\n")
    writer.close()
    await writer.wait_closed()
    return seen


async def test_a_client_hanging_up_after_completion_keeps_the_record(grant: Grant, reports: Reports) -> None:
    """Like Codex, a client hanging up right after `response.completed` still gets the call recorded whole."""
    await _hang_up_after(grant, b"event: response.completed", "hello")
    await eventually(lambda: _reported(reports, 1))
    [call] = calls(reports)
    assert (call.status, call.usage, call.error) == (200, HELLO_TURN_0, "")


async def test_a_client_hanging_up_mid_stream_stops_the_relay(grant: Grant, reports: Reports) -> None:
    """A client gone mid-stream ends the relay; the call is reported with what had been relayed."""
    await _hang_up_after(grant, b"event: response.created", "dribble")
    await eventually(lambda: _reported(reports, 1))
    [call] = calls(reports)
    assert (call.status, call.usage) == (200, Usage())
    assert call.response_body.startswith(b"event: response.created")
    assert b"response.completed" not in call.response_body


async def _reported(reports: Reports, n: int) -> bool:
    return len(calls(reports)) >= n


@pytest.fixture
def codex() -> Path:
    return codex_binary()


async def test_codex_completes_a_turn_through_the_proxy(
    codex: Path,
    proxy: ModelProxy,
    model: ScriptedModel,
    reports: Reports,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real Codex, given only a grant's URL and token, completes the hello turn; both calls are reported."""
    grant = await proxy.open_run("run-codex", max_tokens=10_000, on_report=reports, tcp=True)
    assert grant.base_url is not None
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    monkeypatch.setenv(TOKEN_ENV, grant.token)  # Codex sends $env_key as its bearer token
    with codex_home(tmp_path) as home:
        write_config(home, grant.base_url)
        with (home / "config.toml").open("a") as config:  # the provider's table is the file's last
            config.write(f'env_key = "{TOKEN_ENV}"\n')
        run = await run_codex(codex, home, workspace, "hello", "Create hello.txt")
    assert run.returncode == 0, run.stderr
    assert run.types()[-1] == "turn.completed"
    assert (workspace / "hello.txt").read_text() == "hello from codex\n"
    await eventually(lambda: _reported(reports, 2))
    assert [(c.model, c.status, c.usage) for c in calls(reports)] == [
        ("gpt-5.5", 200, HELLO_TURN_0),
        ("gpt-5.5", 200, HELLO_TURN_1),
    ]
    assert all(seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}" for seen in model.requests)
    assert [seen.headers["x-swarm-run"] for seen in model.requests] == ["run-codex", "run-codex"]
    assert reports.of(BudgetExceeded) == []
    assert reports.of(SandboxBroken) == []
