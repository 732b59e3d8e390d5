"""The script format: model turns the scripted server plays, one turn per model request.

A script is a JSON file `{"description": ..., "turns": [...]}`. Each turn is tagged by `kind`:

* `respond`: output items (tagged by `kind`: `exec_command`, `apply_patch`, `function_call`,
  `reasoning`, `message`, `json`) streamed in order, then `response.completed` with `usage`;
* `fail`: `response.failed` carrying `response.error` {code, message};
* `http_error`: an HTTP status with an OpenAI-style JSON error body.

Every turn may wait `delay_ms` before its first byte and `event_delay_ms` between stream events.
Unknown fields are rejected everywhere, so a typo fails loudly on load, naming the file and the path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeAlias

import msgspec
from msgspec import Meta

BUNDLED = Path(__file__).resolve().parent / "scripts"

NonNegative = Annotated[int, Meta(ge=0)]
Millis = Annotated[int, Meta(ge=0, le=600_000)]


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class Usage(_Strict, frozen=True):
    """Token counts reported in `response.completed`; `total_tokens` is input plus output."""

    input_tokens: NonNegative = 0
    cached_tokens: NonNegative = 0
    output_tokens: NonNegative = 0
    reasoning_tokens: NonNegative = 0


class ExecCommand(_Strict, frozen=True, tag_field="kind", tag="exec_command"):
    """Codex's `exec_command` function call; 30 s lets most commands finish inside one call."""

    cmd: str
    yield_time_ms: Annotated[int, Meta(ge=250, le=30_000)] = 30_000
    workdir: str | None = None


class ApplyPatch(_Strict, frozen=True, tag_field="kind", tag="apply_patch"):
    """Codex's `apply_patch` custom (freeform) tool call; `patch` is the `*** Begin Patch` text."""

    patch: str


class FunctionCall(_Strict, frozen=True, tag_field="kind", tag="function_call"):
    """Any other function tool call (for example `write_stdin`), with its JSON arguments."""

    name: str
    arguments: dict[str, Any] = {}


class Reasoning(_Strict, frozen=True, tag_field="kind", tag="reasoning"):
    """A reasoning item with one summary text."""

    summary: str


class Message(_Strict, frozen=True, tag_field="kind", tag="message"):
    """An assistant message, streamed as one `output_text.delta` per word."""

    text: str


class JsonAnswer(_Strict, frozen=True, tag_field="kind", tag="json"):
    """A structured-output answer: an assistant message whose text is `value` as JSON."""

    value: Any


Item: TypeAlias = ExecCommand | ApplyPatch | FunctionCall | Reasoning | Message | JsonAnswer


class Respond(_Strict, frozen=True, tag_field="kind", tag="respond"):
    """A successful model response holding one or more output items."""

    items: Annotated[list[Item], Meta(min_length=1)]
    usage: Usage = Usage()
    delay_ms: Millis = 0
    event_delay_ms: Millis = 0


class Fail(_Strict, frozen=True, tag_field="kind", tag="fail"):
    """A stream that ends in `response.failed` (or a failed response object when not streaming)."""

    message: str = "scripted failure"
    code: str = "server_error"
    delay_ms: Millis = 0
    event_delay_ms: Millis = 0


class HttpError(_Strict, frozen=True, tag_field="kind", tag="http_error"):
    """A plain HTTP error answer: `{"error": {message, type, code, param}}` with `status`."""

    status: Annotated[int, Meta(ge=400, le=599)] = 500
    message: str = "scripted HTTP error"
    type: str = "server_error"
    code: str | None = None
    delay_ms: Millis = 0


Turn: TypeAlias = Respond | Fail | HttpError


class Script(_Strict, frozen=True):
    """A named sequence of turns; the `n`-th model request of a conversation gets `turns[n]`."""

    turns: list[Turn]
    description: str = ""


FINISHED = Respond(items=[Message(text="script finished")])
"""What a conversation gets once its script has run out of turns (never a hang)."""


class ScriptError(ValueError):
    """A script file that cannot be read or does not match the format."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


_decoder = msgspec.json.Decoder(Script)


def parse(data: bytes | str, origin: Path | str = "<script>") -> Script:
    """Decode and validate one script; errors name `origin` and the JSON path (`$.turns[0].kind`)."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ScriptError(origin, str(exc)) from exc


def load(path: Path) -> Script:
    """Read and validate the script file at `path`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScriptError(path, f"cannot read: {exc.strerror}") from exc
    return parse(data, path)


def load_dir(directory: Path) -> dict[str, Script]:
    """Every `*.json` script in `directory`, keyed by file stem (`hello.json` is `hello`)."""
    if not directory.is_dir():
        raise ScriptError(directory, "not a directory")
    return {path.stem: load(path) for path in sorted(directory.glob("*.json"))}


def catalogue(directory: Path | None, extra: Mapping[str, Script]) -> dict[str, Script]:
    """The bundled scripts (or those of `directory`), overridden and extended by `extra`."""
    return {**load_dir(directory or BUNDLED), **extra}
