"""Reading what passes through: model and usage from an answer, and signs of a broken Codex sandbox.

Answers are read as Codex 0.169 and the Responses API write them (notes/codex-offline.md §2): a stream
of Server-Sent Events ending in `response.completed`, `response.failed` or `response.incomplete`, whose
`response` carries `model` and `usage`; or one JSON response object. Only events that can be terminal
are decoded, so following a stream costs a substring search per chunk.
"""

from __future__ import annotations

from typing import Any

import msgspec

from schemas import Usage

TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})
_MARKERS = tuple(kind.encode() for kind in TERMINAL)

SIGNATURES = ("bwrap:", "bubblewrap is unavailable", "codex-linux-sandbox", "setting up uid map")
_SIGNATURE_BYTES = tuple(signature.encode() for signature in SIGNATURES)
_TOOL_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})
_DETAIL_CHARS = 500


class _InputDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class Final(msgspec.Struct, frozen=True):
    """The part of a response object the proxy records."""

    model: str | None = None
    usage: _Usage | None = None

    def tokens(self) -> Usage:
        """The usage in the shape of `schemas.Usage` (zeros where the answer has none)."""
        usage = self.usage or _Usage()
        cached = (usage.input_tokens_details or _InputDetails()).cached_tokens
        reasoning = (usage.output_tokens_details or _OutputDetails()).reasoning_tokens
        return Usage(
            input_tokens=usage.input_tokens or 0,
            cached_input_tokens=cached or 0,
            output_tokens=usage.output_tokens or 0,
            reasoning_output_tokens=reasoning or 0,
        )


class _Event(msgspec.Struct):
    type: str = ""
    response: Final | None = None


class _Item(msgspec.Struct):
    type: str = ""
    output: Any = None


class _Request(msgspec.Struct):
    model: str | None = None
    input: str | list[_Item] | None = None


_final = msgspec.json.Decoder(Final)
_event = msgspec.json.Decoder(_Event)
_request = msgspec.json.Decoder(_Request)


class SseScanner:
    """Fed a stream's chunks in order; `final` is the response of the last terminal event seen.

    Chunks are only joined when one completes an event, and only complete events holding a terminal
    event type are decoded: the cost per chunk is a few substring searches.
    """

    __slots__ = ("_pending", "final")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self.final: Final | None = None

    def feed(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        if not _may_end_event(chunk):
            return
        data = b"".join(self._pending).replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._pending = [data]
            return
        complete, self._pending = data[:end], [data[end + 2 :]]
        if any(marker in complete for marker in _MARKERS):
            self._scan(complete)

    def finish(self) -> None:
        """The stream ended: an event without its closing blank line still counts."""
        self.feed(b"\n\n")

    def _scan(self, events: bytes) -> None:
        """Keep the last terminal event of `events` (the terminal event is normally the last one)."""
        for block in reversed(events.split(b"\n\n")):
            if any(marker in block for marker in _MARKERS):
                event = _decode_event(block)
                if event is not None and event.type in TERMINAL and event.response is not None:
                    self.final = event.response
                    return


def _may_end_event(chunk: bytes) -> bool:
    """Whether `chunk` may hold the end of an event (a blank line, possibly split across chunks)."""
    return b"\n\n" in chunk or b"\r\n\r\n" in chunk or chunk[:1] == b"\n" or chunk[:2] == b"\r\n"


def _decode_event(block: bytes) -> _Event | None:
    data = b"\n".join(_field(line) for line in block.split(b"\n") if line.startswith(b"data:"))
    try:
        return _event.decode(data)
    except msgspec.DecodeError:
        return None


def _field(line: bytes) -> bytes:
    value = line[5:]
    return value[1:] if value[:1] == b" " else value


def final_of_json(body: bytes) -> Final | None:
    """The model and usage of a JSON response object (None when the body is not one)."""
    try:
        return _final.decode(body)
    except msgspec.DecodeError:
        return None


def model_of_request(body: bytes) -> str:
    """The `model` a request asked for ("" when it names none or is not JSON)."""
    try:
        return _request.decode(body).model or ""
    except msgspec.DecodeError:
        return ""


def sandbox_failure(body: bytes) -> str | None:
    """The first tool-output line of the request's `input` showing that Codex's sandbox failed.

    Only `function_call_output` / `custom_tool_call_output` items count: the same words in a prompt or
    a message are not a failure.
    """
    if not any(signature in body for signature in _SIGNATURE_BYTES):
        return None
    try:
        items = _request.decode(body).input
    except msgspec.DecodeError:
        return None
    if not isinstance(items, list):
        return None
    outputs = (_text(item.output) for item in items if item.type in _TOOL_OUTPUTS)
    return next((line for text in outputs if (line := _signature_line(text))), None)


def _text(output: Any) -> str:
    """A tool output's text: a string, or the `text` of its content parts."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "\n".join(str(part.get("text", "")) for part in output if isinstance(part, dict))
    return ""


def _signature_line(text: str) -> str | None:
    for line in text.splitlines():
        if any(signature in line for signature in SIGNATURES):
            return line.strip()[:_DETAIL_CHARS]
    return None
