"""The pure pattern lifecycle, with every version kept.

    absent ──extracted──▶ active ◀──restored── retired
                            │  ▲ edited: a new version      ▲
                            │  └────────┘                   │
                            └──────────retired──────────────┘

Extracting an existing pattern decides nothing (a redelivered trigger); retiring a retired pattern or
restoring an active one likewise. Editing keeps the earlier versions; a retired pattern can be edited.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import NoReturn, assert_never

import msgspec

from schemas.errors import IllegalTransition, Rejected
from schemas.pattern import (
    Content,
    EditPattern,
    ExtractPattern,
    PatternCommand,
    PatternEdited,
    PatternEvents,
    PatternExtracted,
    PatternRestored,
    PatternRetired,
    Provenance,
    Refinement,
    RestorePattern,
    RetirePattern,
    pattern_id_for,
)
from schemas.rules import Context


class PatternStatus(StrEnum):
    ABSENT = "absent"
    ACTIVE = "active"
    RETIRED = "retired"


class PatternVersion(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    content: Content
    content_hash: str
    at: datetime


class PatternState(msgspec.Struct, frozen=True, kw_only=True):
    pattern_id: str
    status: PatternStatus = PatternStatus.ABSENT
    project_id: str = ""
    task_type: str = ""
    source_run_id: str = ""
    versions: tuple[PatternVersion, ...] = ()

    @property
    def version(self) -> int:
        return len(self.versions)

    @property
    def current(self) -> PatternVersion | None:
        return self.versions[-1] if self.versions else None


class Extraction(msgspec.Struct, frozen=True, kw_only=True):
    """What the extractor built from the run (outside the pure rules: it reads the log, asks a model)."""

    project_id: str
    task_type: str
    content: Content
    provenance: Provenance
    refinement: Refinement = "none"
    refinement_detail: str = ""


def evolve(state: PatternState, event: PatternEvents) -> PatternState:
    match event:
        case PatternExtracted() if state.status is PatternStatus.ABSENT:
            first = PatternVersion(
                version=1, content=event.content, content_hash=event.provenance.content_hash, at=event.at
            )
            return PatternState(
                pattern_id=event.pattern_id,
                status=PatternStatus.ACTIVE,
                project_id=event.project_id,
                task_type=event.task_type,
                source_run_id=event.provenance.run_id,
                versions=(first,),
            )
        case PatternEdited() if (
            state.status is not PatternStatus.ABSENT and event.version == state.version + 1
        ):
            edited = PatternVersion(
                version=event.version, content=event.content, content_hash=event.content_hash, at=event.at
            )
            return msgspec.structs.replace(state, versions=(*state.versions, edited))
        case PatternRetired() if state.status is PatternStatus.ACTIVE:
            return msgspec.structs.replace(state, status=PatternStatus.RETIRED)
        case PatternRestored() if state.status is PatternStatus.RETIRED:
            return msgspec.structs.replace(state, status=PatternStatus.ACTIVE)
        case PatternExtracted() | PatternEdited() | PatternRetired() | PatternRestored():
            _illegal(state, event.type)
        case _:
            assert_never(event)


def fold(pattern_id: str, events: Iterable[PatternEvents]) -> PatternState:
    state = PatternState(pattern_id=pattern_id)
    for event in events:
        state = evolve(state, event)
    return state


def decide(
    state: PatternState, command: PatternCommand, ctx: Context, extraction: Extraction | None = None
) -> list[PatternEvents]:
    """The events a pattern command produces; `[]` when it is already done, `Rejected` when it cannot be."""
    envelope = ctx.envelope(command)
    pattern_id = command.pattern_id
    match command:
        case ExtractPattern():
            if pattern_id != pattern_id_for(command.run_id):
                raise Rejected("pattern", pattern_id, f"the pattern of run {command.run_id} has another id")
            if state.status is not PatternStatus.ABSENT:
                return []
            if extraction is None:
                raise ValueError("extracting a pattern needs the extraction")
            return [PatternExtracted(**envelope, pattern_id=pattern_id, **msgspec.structs.asdict(extraction))]
        case EditPattern():
            current = _require_existing(state)
            content = edited(current.content, command)
            if content == current.content:
                return []
            digest = content.digest()
            return [
                PatternEdited(
                    **envelope,
                    pattern_id=pattern_id,
                    version=state.version + 1,
                    content=content,
                    content_hash=digest,
                )
            ]
        case RetirePattern():
            _require_existing(state)
            if state.status is PatternStatus.RETIRED:
                return []
            return [PatternRetired(**envelope, pattern_id=pattern_id, reason=command.reason)]
        case RestorePattern():
            _require_existing(state)
            if state.status is PatternStatus.ACTIVE:
                return []
            return [PatternRestored(**envelope, pattern_id=pattern_id, reason=command.reason)]
        case _:
            assert_never(command)


def edited(content: Content, command: EditPattern) -> Content:
    """`content` with the parts the command names replaced."""
    return Content(
        name=content.name if command.name is None else command.name,
        goal=content.goal,
        summary=content.summary if command.summary is None else command.summary,
        steps=content.steps if command.steps is None else command.steps,
        variables=content.variables if command.variables is None else command.variables,
    )


def _require_existing(state: PatternState) -> PatternVersion:
    if state.current is None:
        raise Rejected("pattern", state.pattern_id, "it does not exist")
    return state.current


def _illegal(state: PatternState, message_type: str) -> NoReturn:
    raise IllegalTransition("pattern", state.pattern_id, str(state.status), message_type)
