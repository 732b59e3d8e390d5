"""The pure project lifecycle: absent ──created──▶ active ──archived──▶ archived (immutable)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import NoReturn, TypeVar, assert_never

import msgspec

from schemas.errors import IllegalTransition, Rejected
from schemas.project import (
    ArchiveProject,
    CreateProject,
    ProjectArchived,
    ProjectCommand,
    ProjectCreated,
    ProjectEvents,
    ProjectUpdated,
    Source,
    UpdateProject,
)
from schemas.rules import Context

T = TypeVar("T")


class ProjectStatus(StrEnum):
    ABSENT = "absent"
    ACTIVE = "active"
    ARCHIVED = "archived"


class ProjectState(msgspec.Struct, frozen=True, kw_only=True):
    project_id: str
    status: ProjectStatus = ProjectStatus.ABSENT
    name: str = ""
    source: Source | None = None
    description: str = ""
    default_task_type: str = "code"
    version: int = 0


def evolve(state: ProjectState, event: ProjectEvents) -> ProjectState:
    match event:
        case ProjectCreated() if state.status is ProjectStatus.ABSENT:
            return ProjectState(
                project_id=event.project_id,
                status=ProjectStatus.ACTIVE,
                name=event.name,
                source=event.source,
                description=event.description,
                default_task_type=event.default_task_type,
                version=state.version + 1,
            )
        case ProjectUpdated() if state.status is ProjectStatus.ACTIVE:
            return msgspec.structs.replace(
                state,
                name=_or(event.name, state.name),
                source=_or(event.source, state.source),
                description=_or(event.description, state.description),
                default_task_type=_or(event.default_task_type, state.default_task_type),
                version=state.version + 1,
            )
        case ProjectArchived() if state.status is ProjectStatus.ACTIVE:
            return msgspec.structs.replace(state, status=ProjectStatus.ARCHIVED, version=state.version + 1)
        case ProjectCreated() | ProjectUpdated() | ProjectArchived():
            _illegal(state, event.type)
        case _:
            assert_never(event)


def fold(project_id: str, events: Iterable[ProjectEvents]) -> ProjectState:
    state = ProjectState(project_id=project_id)
    for event in events:
        state = evolve(state, event)
    return state


def decide(state: ProjectState, command: ProjectCommand, ctx: Context) -> list[ProjectEvents]:
    """The events a project command produces; `Rejected` says why it cannot apply."""
    envelope = ctx.envelope(command)
    project_id = command.project_id
    match command:
        case CreateProject():
            if state.status is not ProjectStatus.ABSENT:
                raise Rejected("project", state.project_id, "it already exists")
            return [
                ProjectCreated(
                    **envelope,
                    project_id=project_id,
                    name=command.name,
                    source=command.source,
                    description=command.description,
                    default_task_type=command.default_task_type,
                )
            ]
        case UpdateProject():
            _require_active(state)
            update = ProjectUpdated(
                **envelope,
                project_id=project_id,
                name=_changed(command.name, state.name),
                source=_changed(command.source, state.source),
                description=_changed(command.description, state.description),
                default_task_type=_changed(command.default_task_type, state.default_task_type),
            )
            changes = (update.name, update.source, update.description, update.default_task_type)
            return [update] if any(change is not None for change in changes) else []
        case ArchiveProject():
            _require_active(state)
            return [ProjectArchived(**envelope, project_id=project_id, reason=command.reason)]
        case _:
            assert_never(command)


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _changed(value: T | None, current: T) -> T | None:
    return None if value == current else value


def _require_active(state: ProjectState) -> None:
    if state.status is not ProjectStatus.ACTIVE:
        why = "it does not exist" if state.status is ProjectStatus.ABSENT else "it is archived"
        raise Rejected("project", state.project_id, why)


def _illegal(state: ProjectState, message_type: str) -> NoReturn:
    raise IllegalTransition("project", state.project_id, str(state.status), message_type)
