"""The pattern aggregate's messages: a reusable workflow learnt from a succeeded run.

A pattern's id derives from its source run (`pat_` + the run's ULID), so extracting the same run twice
addresses the same aggregate: the second extraction finds it there and does nothing. Every event of a
pattern shares the subject `swarm.<tenant>.evt.pattern.<pattern_id>`.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta

from schemas.base import CommandBase, EventBase
from schemas.types import Count, Digest, Name, PatternId, ProjectId, RunId, ShortText, TaskType, Text

MAX_STEPS = 12
MAX_VARIABLES = 12
VariableName = Annotated[str, Meta(pattern="^[a-z][a-z0-9_]{0,47}$")]
StepKind = Literal["command", "create", "edit", "delete", "check", "note"]
VariableKind = Literal["path", "file_type", "name", "url", "value"]


class Step(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One step of the workflow: what to do and why; `target` is the command line or the file."""

    kind: StepKind
    text: ShortText
    target: ShortText = ""


class Variable(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Something that changes for a similar task; `example` is its value in the source run."""

    name: VariableName
    kind: VariableKind
    example: ShortText = ""
    description: ShortText = ""


class Content(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a pattern says; one version of it. Its hash is over its canonical JSON."""

    name: Name
    goal: Text
    summary: ShortText
    steps: Annotated[list[Step], Meta(min_length=1, max_length=MAX_STEPS)]
    variables: Annotated[list[Variable], Meta(max_length=MAX_VARIABLES)] = []

    def digest(self) -> str:
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()


class Provenance(msgspec.Struct, frozen=True, kw_only=True):
    """Where a pattern came from: the run, the stream sequences it was built from, by which extractor."""

    run_id: RunId
    first_seq: Count
    last_seq: Count
    extractor_version: Annotated[str, Meta(min_length=1, max_length=40)]
    content_hash: Digest


def pattern_id_for(run_id: str) -> str:
    """The one pattern id a run's extraction can have: `pat_` and the run's ULID."""
    return "pat_" + run_id.rsplit("_", 1)[-1]


# Commands


class PatternCommandBase(CommandBase, frozen=True, kw_only=True):
    AGGREGATE: ClassVar[str] = "pattern"
    pattern_id: PatternId

    @property
    def aggregate_id(self) -> str:
        return self.pattern_id


class ExtractPattern(PatternCommandBase, frozen=True, kw_only=True, tag="pattern.extract"):
    """Turn a succeeded run into a pattern; `pattern_id` must be `pattern_id_for(run_id)`."""

    run_id: RunId


class EditPattern(PatternCommandBase, frozen=True, kw_only=True, tag="pattern.edit"):
    """A new version with the named parts replaced; a part left `None` keeps its value."""

    name: Name | None = None
    summary: ShortText | None = None
    steps: Annotated[list[Step], Meta(min_length=1, max_length=MAX_STEPS)] | None = None
    variables: Annotated[list[Variable], Meta(max_length=MAX_VARIABLES)] | None = None


class RetirePattern(PatternCommandBase, frozen=True, kw_only=True, tag="pattern.retire"):
    reason: ShortText = ""


class RestorePattern(PatternCommandBase, frozen=True, kw_only=True, tag="pattern.restore"):
    reason: ShortText = ""


# Events


class PatternEvent(EventBase, frozen=True, kw_only=True):
    AGGREGATE: ClassVar[str] = "pattern"
    pattern_id: PatternId

    @property
    def aggregate_id(self) -> str:
        return self.pattern_id


Refinement = Literal["none", "model", "fallback"]


class PatternExtracted(PatternEvent, frozen=True, kw_only=True, tag="pattern.extracted"):
    """Version 1. `refinement`: `none` (no model asked), `model` (the model's version), or `fallback`
    (the model's answer was unusable, `refinement_detail` says why, and the baseline was kept)."""

    project_id: ProjectId
    task_type: TaskType
    content: Content
    provenance: Provenance
    refinement: Refinement = "none"
    refinement_detail: ShortText = ""


class PatternEdited(PatternEvent, frozen=True, kw_only=True, tag="pattern.edited"):
    """A new version, whole; the earlier versions stay in the log and in the folded state."""

    version: Annotated[int, Meta(ge=2)]
    content: Content
    content_hash: Digest


class PatternRetired(PatternEvent, frozen=True, kw_only=True, tag="pattern.retired"):
    reason: ShortText = ""


class PatternRestored(PatternEvent, frozen=True, kw_only=True, tag="pattern.restored"):
    reason: ShortText = ""


PatternCommand = ExtractPattern | EditPattern | RetirePattern | RestorePattern
PatternEvents = PatternExtracted | PatternEdited | PatternRetired | PatternRestored
