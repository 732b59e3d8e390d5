"""Decoding messages read back from the log, whose ids were checked when they entered the system.

Every message is validated where it comes in (a REST body, a command handler's decision built from a
validated command, a Codex line translated into typed events). Reading the log back, the regular
expressions of the id patterns are most of a decode's cost — about 3 of 7 µs a message, one match per id
— and can only fail for a message written past the bus. `decode_stored` decodes into subclasses of the
message types that keep every other constraint (types, lengths, time zones, required fields) and drop
only the patterns. What it returns are instances of the real types: `match`, `isinstance` and the
encoder see no difference (`==` does: the classes differ).
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any, Literal, Union

import msgspec

from schemas.codec import Message, checked

_META = (
    "gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "tz",
    "title", "description", "examples", "extra_json_schema", "extra",
)  # fmt: skip


def _without_pattern(meta: Any) -> Any:
    if isinstance(meta, msgspec.Meta) and meta.pattern is not None:
        return msgspec.Meta(
            **{name: getattr(meta, name) for name in _META if getattr(meta, name) is not None}
        )
    return meta


def unpatterned(kind: Any) -> Any:
    """`kind` with every pattern constraint removed, Struct types replaced by their unpatterned subclass."""
    origin = typing.get_origin(kind)
    if origin is Annotated:
        inner, *extras = typing.get_args(kind)
        return Annotated[(unpatterned(inner), *map(_without_pattern, extras))]
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return _subclass(kind)
    if origin in (Union, types.UnionType):
        return Union[tuple(unpatterned(arg) for arg in typing.get_args(kind))]  # noqa: UP007 - built from a tuple
    if origin is None or origin is Literal:
        return kind
    return origin[tuple(unpatterned(arg) for arg in typing.get_args(kind))]


@functools.cache
def _subclass(struct: type[msgspec.Struct]) -> type[msgspec.Struct]:
    config = struct.__struct_config__
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for field in msgspec.structs.fields(struct):
        kind = unpatterned(field.type)
        if field.default is not msgspec.NODEFAULT:
            fields.append((field.name, kind, field.default))
        elif field.default_factory is not msgspec.NODEFAULT:
            fields.append((field.name, kind, msgspec.field(default_factory=field.default_factory)))
        else:
            fields.append((field.name, kind))
    return msgspec.defstruct(
        struct.__name__, fields, bases=(struct,), module=struct.__module__, kw_only=True,
        tag=config.tag, tag_field=config.tag_field, frozen=config.frozen,
        forbid_unknown_fields=config.forbid_unknown_fields, omit_defaults=config.omit_defaults,
        gc=False,
    )  # fmt: skip


_stored_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(unpatterned(Message))


def decode_stored(data: bytes | str) -> Message:
    """Decode a command or event read from the log; errors as `decode` raises them."""
    return checked(_stored_decoder, data)
