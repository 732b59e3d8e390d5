"""The pure project lifecycle: absent, active, archived; commands decide events, illegal events raise."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import msgspec
import pytest

from schemas import (
    ArchiveProject,
    Context,
    CreateProject,
    GitSource,
    IdSource,
    IllegalTransition,
    LocalSource,
    ProjectArchived,
    ProjectCreated,
    ProjectUpdated,
    Rejected,
    UpdateProject,
)
from schemas.project import ProjectEvents
from schemas.project_state import ProjectState, ProjectStatus, decide, evolve, fold
from tests.schemas.test_codec import sample

NOW = datetime(2025, 4, 5, 6, 7, 8, tzinfo=UTC)
PROJECT_ID = sample(CreateProject).project_id
SOURCE = LocalSource(path="/srv/shop")


def context(seed: int = 1) -> Context:
    return Context(
        now=NOW, ids=IdSource(clock_ms=lambda: 1_743_833_228_000, entropy=random.Random(seed).randbytes)
    )


def create() -> CreateProject:
    return CreateProject(
        **{field: getattr(sample(CreateProject), field) for field in ("id", "at", "tenant", "actor")},
        project_id=PROJECT_ID,
        name="shop",
        source=SOURCE,
        description="the shop",
    )


def update(**fields: object) -> UpdateProject:
    return msgspec.structs.replace(sample(UpdateProject), **{"name": None, "source": None, **fields})


def archive() -> ArchiveProject:
    return sample(ArchiveProject)


def apply(state: ProjectState, command: CreateProject | UpdateProject | ArchiveProject) -> ProjectState:
    """Decide and fold, as a command handler does."""
    for decided in decide(state, command, context()):
        state = evolve(state, decided)
    return state


def active() -> ProjectState:
    return apply(ProjectState(project_id=PROJECT_ID), create())


def archived() -> ProjectState:
    return apply(active(), archive())


def test_create_gives_project_created_with_the_command_fields() -> None:
    """Creating an absent project decides `project.created` carrying the command's fields and envelope."""
    command = create()
    [decided] = decide(ProjectState(project_id=PROJECT_ID), command, context())
    assert isinstance(decided, ProjectCreated)
    assert (decided.name, decided.source, decided.description) == ("shop", SOURCE, "the shop")
    assert (decided.causation_id, decided.actor, decided.at) == (command.id, command.actor, NOW)


def test_created_project_is_active() -> None:
    """Folding `project.created` gives an active project with its fields at version 1."""
    state = active()
    assert (state.status, state.name, state.source, state.version) == (
        ProjectStatus.ACTIVE,
        "shop",
        SOURCE,
        1,
    )


def test_create_twice_is_rejected() -> None:
    """Creating a project that exists raises `Rejected`."""
    with pytest.raises(Rejected, match="already exists"):
        decide(active(), create(), context())


def test_update_changes_only_what_differs() -> None:
    """An update carries only the fields that change; the fold keeps the others."""
    git = GitSource(url="https://git.example.com/shop.git")
    [decided] = decide(active(), update(name="shop", description="new", source=git), context())
    assert isinstance(decided, ProjectUpdated)
    assert (decided.name, decided.description, decided.source, decided.default_task_type) == (
        None,
        "new",
        git,
        None,
    )
    state = evolve(active(), decided)
    assert (state.name, state.description, state.source, state.version) == ("shop", "new", git, 2)


def test_update_with_no_change_decides_nothing() -> None:
    """An update that names only current values, or nothing, decides no events."""
    same = update(
        name="shop", source=LocalSource(path="/srv/shop"), description="the shop", default_task_type="code"
    )
    assert decide(active(), same, context()) == []
    assert decide(active(), update(), context()) == []


def test_archive_gives_an_archived_project() -> None:
    """Archiving an active project decides `project.archived`, which folds to the archived status."""
    [decided] = decide(active(), archive(), context())
    assert isinstance(decided, ProjectArchived)
    assert decided.reason == archive().reason
    assert evolve(active(), decided).status is ProjectStatus.ARCHIVED


@pytest.mark.parametrize(
    ("state", "why"),
    [(ProjectState(project_id=PROJECT_ID), "does not exist"), (archived(), "archived")],
    ids=["absent", "archived"],
)
@pytest.mark.parametrize("command", [update(name="x"), archive()], ids=["update", "archive"])
def test_update_or_archive_of_absent_or_archived_is_rejected(
    state: ProjectState, why: str, command: UpdateProject | ArchiveProject
) -> None:
    """Updating or archiving a project that is absent or archived raises `Rejected` saying which."""
    with pytest.raises(Rejected, match=why) as caught:
        decide(state, command, context())
    assert (caught.value.aggregate, caught.value.aggregate_id) == ("project", PROJECT_ID)


def test_create_of_archived_is_rejected() -> None:
    """An archived project cannot be created again."""
    with pytest.raises(Rejected):
        decide(archived(), create(), context())


@pytest.mark.parametrize(
    ("state", "cls", "status"),
    [
        (ProjectState(project_id=PROJECT_ID), ProjectUpdated, "absent"),
        (ProjectState(project_id=PROJECT_ID), ProjectArchived, "absent"),
        (active(), ProjectCreated, "active"),
        (archived(), ProjectCreated, "archived"),
        (archived(), ProjectUpdated, "archived"),
        (archived(), ProjectArchived, "archived"),
    ],
    ids=[
        "absent-updated",
        "absent-archived",
        "active-created",
        "archived-created",
        "archived-updated",
        "archived-archived",
    ],
)
def test_illegal_events_raise_illegal_transition(state: ProjectState, cls: type, status: str) -> None:
    """An event that cannot follow the project's status raises `IllegalTransition` with status and type."""
    illegal: ProjectEvents = sample(cls)
    with pytest.raises(IllegalTransition) as caught:
        evolve(state, illegal)
    assert (caught.value.status, caught.value.message_type) == (status, illegal.type)


def test_fold_replays_a_history() -> None:
    """Folding created, updated and archived gives the archived project with the updated fields."""
    history = [sample(ProjectCreated), sample(ProjectUpdated), sample(ProjectArchived)]
    state = fold(PROJECT_ID, history)
    assert (state.status, state.description, state.version) == (ProjectStatus.ARCHIVED, "new", 3)
    assert state.source == sample(ProjectUpdated).source
