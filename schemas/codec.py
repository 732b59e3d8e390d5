"""One encoder and one decoder per stream union, built once and reused."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from schemas.errors import InvalidMessage, UnknownMessageType
from schemas.key import KeyCommand, KeyEvents
from schemas.pattern import PatternCommand, PatternEvents
from schemas.project import ProjectCommand, ProjectEvents
from schemas.run import RunCommand, RunEvents

AnyCommand = ProjectCommand | RunCommand | KeyCommand | PatternCommand
AnyEvent = ProjectEvents | RunEvents | KeyEvents | PatternEvents
Message = AnyCommand | AnyEvent

T = TypeVar("T")


class _Tagged(msgspec.Struct):
    type: str = ""


def _tags(union: Any) -> frozenset[str]:
    return frozenset(str(cls.__struct_config__.tag) for cls in union.__args__)


COMMAND_TYPES = _tags(AnyCommand)
EVENT_TYPES = _tags(AnyEvent)
_KNOWN_TYPES = COMMAND_TYPES | EVENT_TYPES

_encoder = msgspec.json.Encoder()
_message_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)
_command_decoder: msgspec.json.Decoder[AnyCommand] = msgspec.json.Decoder(AnyCommand)
_event_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)
_tag_decoder = msgspec.json.Decoder(_Tagged)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes | str) -> Message:
    """Decode any command or event; raise `InvalidMessage` (or `UnknownMessageType`) with the reason."""
    return checked(_message_decoder, data)


def decode_command(data: bytes | str) -> AnyCommand:
    return checked(_command_decoder, data)


def decode_event(data: bytes | str) -> AnyEvent:
    return checked(_event_decoder, data)


def checked(decoder: msgspec.json.Decoder[T], data: bytes | str) -> T:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        tag = _peek_tag(data)
        if tag and tag not in _KNOWN_TYPES:  # a known tag on the wrong decoder is invalid, not newer
            raise UnknownMessageType(tag) from exc
        raise InvalidMessage(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"not valid JSON: {exc}") from exc


def _peek_tag(data: bytes | str) -> str:
    try:
        return _tag_decoder.decode(data).type
    except msgspec.MsgspecError:
        return ""
