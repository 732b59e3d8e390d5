"""JSON Schema of every command and event, generated from the Structs (for docs and clients)."""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.codec import AnyCommand, AnyEvent


def document() -> dict[str, Any]:
    """One JSON Schema document: `$defs` holds every type; `commands` and `events` list the messages."""
    (command, event), defs = msgspec.json.schema_components(
        [AnyCommand, AnyEvent], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "codex-swarm messages",
        "oneOf": [command, event],
        "$defs": {"Command": command, "Event": event, **defs},
    }
