"""The project aggregate's messages: a named source of code that runs work on."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

from schemas.base import CommandBase, EventBase
from schemas.types import Name, ProjectId, ShortText, TaskType


class LocalSource(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="local"):
    """A directory on the executor's machine."""

    path: Annotated[str, Meta(min_length=1, max_length=4096)]


class GitSource(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="git"):
    """A git repository cloned in the setup phase of each run."""

    url: Annotated[str, Meta(pattern=r"^(https?|ssh|git|file)://\S+$|^[\w.-]+@[\w.-]+:\S+$", max_length=2048)]
    ref: Annotated[str, Meta(min_length=1, max_length=255)] = "HEAD"


Source = LocalSource | GitSource


# Commands


class ProjectCommandBase(CommandBase, frozen=True, kw_only=True):
    AGGREGATE: ClassVar[str] = "project"
    project_id: ProjectId

    @property
    def aggregate_id(self) -> str:
        return self.project_id


class CreateProject(ProjectCommandBase, frozen=True, kw_only=True, tag="project.create"):
    name: Name
    source: Source
    description: ShortText = ""
    default_task_type: TaskType = "code"


class UpdateProject(ProjectCommandBase, frozen=True, kw_only=True, tag="project.update"):
    """Changes the named fields; a field left `None` keeps its value."""

    name: Name | None = None
    source: Source | None = None
    description: ShortText | None = None
    default_task_type: TaskType | None = None


class ArchiveProject(ProjectCommandBase, frozen=True, kw_only=True, tag="project.archive"):
    reason: ShortText = ""


# Events


class ProjectEvent(EventBase, frozen=True, kw_only=True):
    AGGREGATE: ClassVar[str] = "project"
    project_id: ProjectId

    @property
    def aggregate_id(self) -> str:
        return self.project_id


class ProjectCreated(ProjectEvent, frozen=True, kw_only=True, tag="project.created"):
    name: Name
    source: Source
    description: ShortText = ""
    default_task_type: TaskType = "code"


class ProjectUpdated(ProjectEvent, frozen=True, kw_only=True, tag="project.updated"):
    name: Name | None = None
    source: Source | None = None
    description: ShortText | None = None
    default_task_type: TaskType | None = None


class ProjectArchived(ProjectEvent, frozen=True, kw_only=True, tag="project.archived"):
    reason: ShortText = ""


ProjectCommand = CreateProject | UpdateProject | ArchiveProject
ProjectEvents = ProjectCreated | ProjectUpdated | ProjectArchived
