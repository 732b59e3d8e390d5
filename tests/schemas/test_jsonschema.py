"""The generated JSON Schema describes every command and event, with each type tag as a fixed value."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import schemas
from tests.schemas.test_codec import ALL_CLASSES, COMMAND_CLASSES, EVENT_CLASSES, sample


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return schemas.json_schema()


def refs(node: object) -> Iterator[str]:
    """Every `$ref` anywhere in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_document_is_plain_json(document: dict[str, Any]) -> None:
    """The document survives a JSON round trip unchanged and names the 2020-12 dialect."""
    assert json.loads(json.dumps(document)) == document
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_message_class_has_a_definition_with_its_tag(document: dict[str, Any], cls: type) -> None:
    """Each command and event class has a `$defs` entry whose `type` property allows only its tag."""
    definition = document["$defs"][cls.__name__]
    assert definition["type"] == "object"
    assert definition["properties"]["type"] == {"enum": [sample(cls).type]}
    assert "type" in definition["required"]


@pytest.mark.parametrize(
    ("union", "classes"), [("Command", COMMAND_CLASSES), ("Event", EVENT_CLASSES)], ids=["commands", "events"]
)
def test_unions_discriminate_on_the_type_tag(
    document: dict[str, Any], union: str, classes: tuple[type, ...]
) -> None:
    """The command and event unions map every tag to its class's definition through the `type` property."""
    definition = document["$defs"][union]
    expected = {sample(cls).type: f"#/$defs/{cls.__name__}" for cls in classes}
    assert definition["discriminator"] == {"propertyName": "type", "mapping": expected}
    assert sorted(option["$ref"] for option in definition["anyOf"]) == sorted(expected.values())


def test_top_level_accepts_a_command_or_an_event(document: dict[str, Any]) -> None:
    """The document's root is one of the two unions."""
    assert document["oneOf"] == [document["$defs"]["Command"], document["$defs"]["Event"]]


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    """Every `$ref` points at an existing `$defs` entry."""
    found = set(refs(document))
    assert found
    missing = {ref for ref in found if ref.removeprefix("#/$defs/") not in document["$defs"]}
    assert not missing


def test_constraints_reach_the_schema(document: dict[str, Any]) -> None:
    """Id patterns, length limits and the timezone-aware time format appear in the schema for clients."""
    start = document["$defs"]["StartRun"]["properties"]
    assert start["run_id"]["pattern"] == "^run_[0-9A-HJKMNP-TV-Z]{26}$"
    assert start["instructions"]["maxLength"] == 32_000
    assert start["at"]["format"] == "date-time"
    assert document["$defs"]["CreateProject"]["properties"]["name"]["maxLength"] == 200
