"""Task types as data (`task_types.json`): each with a description, a prompt template and variable hints.

Here rather than in `executors` so the gateway can validate a run's task type without importing the
executor. A template holds `{instructions}` and `{reference}` (where a reference workflow goes).
"""

from __future__ import annotations

import functools
from pathlib import Path

import msgspec

from schemas.errors import InvalidMessage

_FILE = Path(__file__).resolve().parent / "task_types.json"


class TaskTypeSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    description: str
    template: str
    variable_hints: list[str] = []
    name: str = ""

    def prompt(self, instructions: str, reference: str = "") -> str:
        """The prompt Codex gets: the template filled with the instructions and the reference block."""
        return self.template.format(
            instructions=instructions, reference=f"\n\n{reference}" if reference else ""
        )


class UnknownTaskType(InvalidMessage):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown task type {name!r}; known: {', '.join(sorted(catalogue()))}")
        self.name = name


@functools.cache
def catalogue() -> dict[str, TaskTypeSpec]:
    """Every task type by name, read once."""
    raw = msgspec.json.decode(_FILE.read_bytes(), type=dict[str, TaskTypeSpec])
    for name, spec in raw.items():
        if "{instructions}" not in spec.template or "{reference}" not in spec.template:
            raise InvalidMessage(f"task type {name}: the template needs {{instructions}} and {{reference}}")
    return {name: msgspec.structs.replace(spec, name=name) for name, spec in raw.items()}


def get(name: str) -> TaskTypeSpec:
    """The task type called `name`; `UnknownTaskType` (never a silent fallback) when there is none."""
    spec = catalogue().get(name)
    if spec is None:
        raise UnknownTaskType(name)
    return spec


def names() -> list[str]:
    return sorted(catalogue())
