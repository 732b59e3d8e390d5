"""The scripted model server: an OpenAI-compatible Responses API that plays scripts of turns.

`POST /v1/responses` answers the next turn of the selected script, as Server-Sent Events when the body
asks for `stream: true` and as one response object otherwise. The header `x-swarm-script` picks the
script, else (for a structured-output request, `text.format.type` `json_schema`) the script named
like the schema when there is one, else a `[script:NAME]` marker in a user message, else the server
default. Turns are
counted per conversation, keyed by `x-swarm-run`, else the
`session-id` / `thread-id` Codex sends, else one global conversation. A conversation whose script is
used up gets a final "script finished" message. Every request is recorded (`requests`,
`requests_for()`, `GET /v1/_scripted/requests`). `GET /v1/models` lists the served model.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import msgspec
import structlog
from aiohttp import web

from executors.scripted import _render
from executors.scripted.script import FINISHED, HttpError, Script, Turn, catalogue

log = structlog.get_logger(__name__)

SCRIPT_HEADER = "x-swarm-script"
RUN_HEADER = "x-swarm-run"
_CONVERSATION_HEADERS = (RUN_HEADER, "session-id", "thread-id")
_SCRIPT_MARKER = re.compile(r"\[script:([A-Za-z0-9_.-]+)\]")


class RecordedRequest(msgspec.Struct, frozen=True):
    """One request as the server received it; `turn` is the script position it consumed, if any."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    conversation: str = ""
    script: str = ""
    turn: int | None = None


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def conversation_of(headers: Mapping[str, str]) -> str:
    """The key a request's turns are counted under ("" means the one global conversation)."""
    return next((headers[name] for name in _CONVERSATION_HEADERS if headers.get(name)), "")


class ScriptedModel:
    """The server as an async context manager: `async with ScriptedModel() as model: model.base_url`."""

    def __init__(
        self,
        *,
        scripts_dir: Path | None = None,
        scripts: Mapping[str, Script] | None = None,
        default_script: str = "hello",
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "gpt-5.5",
    ) -> None:
        self.scripts = catalogue(scripts_dir, scripts or {})
        self.default_script = default_script
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._host, self._port = host, port
        self._positions: dict[tuple[str, str], int] = {}
        self._response_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT/v1`, the value for `base_url` in Codex or the `openai` client."""
        return f"http://{self._host}:{self._port}/v1"

    def requests_for(self, conversation: str) -> list[RecordedRequest]:
        """The recorded requests of one conversation, in arrival order."""
        return [request for request in self.requests if request.conversation == conversation]

    def app(self) -> web.Application:
        """The aiohttp application (for `aiohttp.test_utils` or embedding in another server)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/_scripted/requests", self._recorded)
        return app

    async def __aenter__(self) -> Self:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self._port = self._runner.addresses[0][1]
        log.info("scripted_model_started", base_url=self.base_url, scripts=sorted(self.scripts))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            body = await _json_body(request)
            name = self._script_name(headers, body)
        except _BadRequest as bad:
            self._record(request, headers, None)
            return _error_response(bad.status, bad.message, "invalid_request_error", bad.code)
        conversation = conversation_of(headers)
        position, turn = self._next_turn(conversation, name)
        self._record(request, headers, body, conversation=conversation, script=name, turn=position)
        log.debug("scripted_turn", script=name, conversation=conversation, turn=position)
        return await self._answer(request, body, turn)

    async def _answer(self, request: web.Request, body: dict[str, Any], turn: Turn) -> web.StreamResponse:
        await asyncio.sleep(turn.delay_ms / 1000)
        if isinstance(turn, HttpError):
            return _error_response(turn.status, turn.message, turn.type, turn.code)
        ctx = self._context(body)
        if body.get("stream") is True:
            return await _stream(request, _render.events(ctx, turn), turn.event_delay_ms / 1000)
        return _json_response(_render.final(ctx, turn))

    async def _models(self, request: web.Request) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self._record(request, headers, None)
        entry = {"id": self.model, "object": "model", "created": 0, "owned_by": "swarm-scripted"}
        return _json_response({"object": "list", "data": [entry]})

    async def _recorded(self, request: web.Request) -> web.Response:
        wanted = request.query.get("conversation")
        found = self.requests if wanted is None else self.requests_for(wanted)
        return web.Response(body=msgspec.json.encode(found), content_type="application/json")

    def _script_name(self, headers: Mapping[str, str], body: dict[str, Any]) -> str:
        name = (
            headers.get(SCRIPT_HEADER)
            or self._schema_script(body)
            or script_in_prompt(body)
            or self.default_script
        )
        if name not in self.scripts:
            known = ", ".join(sorted(self.scripts))
            raise _BadRequest(400, f"unknown script {name!r} (known: {known})", "unknown_script")
        return name

    def _schema_script(self, body: dict[str, Any]) -> str | None:
        """The script named like a structured-output request's schema, if there is one."""
        text = body.get("text")
        form = text.get("format") if isinstance(text, dict) else None
        if isinstance(form, dict) and form.get("type") == "json_schema" and form.get("name") in self.scripts:
            return str(form["name"])
        return None

    def _next_turn(self, conversation: str, name: str) -> tuple[int | None, Turn]:
        """Consume the conversation's next turn; `(None, FINISHED)` once the script is used up."""
        key = (conversation, name)
        position = self._positions.get(key, 0)
        self._positions[key] = position + 1
        turns = self.scripts[name].turns
        return (position, turns[position]) if position < len(turns) else (None, FINISHED)

    def _context(self, body: dict[str, Any]) -> _render.Context:
        return _render.Context(
            response_id=f"resp_{next(self._response_ids):06d}",
            model=str(body.get("model") or self.model),
            created_at=int(time.time()),
            tools=list(body.get("tools") or []),
            tool_choice=body.get("tool_choice", "auto"),
            parallel_tool_calls=bool(body.get("parallel_tool_calls", True)),
        )

    def _record(self, request: web.Request, headers: dict[str, str], body: Any, **where: Any) -> None:
        self.requests.append(RecordedRequest(request.method, request.path, headers, body, **where))


def script_in_prompt(body: dict[str, Any]) -> str | None:
    """The script a user message names with a `[script:NAME]` marker (the header takes precedence)."""
    for item in body.get("input") or []:
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        for part in item.get("content") or []:
            text = part.get("text") if isinstance(part, dict) else None
            found = _SCRIPT_MARKER.search(text) if isinstance(text, str) else None
            if found:
                return found.group(1)
    return None


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise _BadRequest(400, f"the body is not JSON: {exc}", "invalid_json") from exc
    if not isinstance(body, dict):
        raise _BadRequest(400, "the body must be a JSON object", "invalid_json")
    return body


async def _stream(request: web.Request, events: list[_render.Json], gap: float) -> web.StreamResponse:
    """Write `events` as SSE; a client that hangs up early (Codex does, after completion) is fine."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        for sequence, event in enumerate(events):
            if sequence and gap:
                await asyncio.sleep(gap)
            await response.write(_sse(event, sequence))
        await response.write_eof()
    except ConnectionResetError:
        log.debug("scripted_client_hung_up", path=request.path)
    return response


def _sse(event: _render.Json, sequence: int) -> bytes:
    data = msgspec.json.encode({**event, "sequence_number": sequence})
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + data + b"\n\n"


def _error_response(status: int, message: str, kind: str, code: str | None) -> web.Response:
    error = {"message": message, "type": kind, "param": None, "code": code}
    return _json_response({"error": error}, status=status)


def _json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(payload), status=status, content_type="application/json")
