"""The pure pattern lifecycle: one extraction per run, versions kept on edit, retire and restore."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from schemas import (
    Content,
    Context,
    EditPattern,
    ExtractPattern,
    IdSource,
    Kind,
    PatternEdited,
    PatternExtracted,
    Provenance,
    Rejected,
    RestorePattern,
    RetirePattern,
    Step,
    pattern_id_for,
    task_types,
)
from schemas.pattern_state import Extraction, PatternState, PatternStatus, decide, evolve, fold

AT = datetime(2025, 3, 1, tzinfo=UTC)
IDS = IdSource(clock_ms=lambda: 1_740_000_000_000, entropy=random.Random(7).randbytes)
RUN = IDS.new(Kind.RUN)
PID = pattern_id_for(RUN)
CONTENT = Content(
    name="greet", goal="greet", summary="Greets.", steps=[Step(kind="create", text="Create it")]
)
EXTRACTION = Extraction(
    project_id=IDS.new(Kind.PROJECT),
    task_type="code",
    content=CONTENT,
    provenance=Provenance(
        run_id=RUN, first_seq=1, last_seq=9, extractor_version="t", content_hash=CONTENT.digest()
    ),
)


def _ctx() -> Context:
    return Context(now=AT, actor="sys_patterns", ids=IDS)


def _command(cls: type, **fields: object) -> object:
    return cls(id=IDS.new(Kind.COMMAND), at=AT, tenant="acme", actor="key_a", pattern_id=PID, **fields)


def _extracted() -> PatternState:
    [event] = decide(PatternState(pattern_id=PID), _command(ExtractPattern, run_id=RUN), _ctx(), EXTRACTION)  # type: ignore[arg-type]
    return evolve(PatternState(pattern_id=PID), event)


def test_the_pattern_id_derives_from_the_run() -> None:
    """A run's pattern id is `pat_` and the run's ULID, so every extraction of it addresses one pattern."""
    assert "pat_" + RUN.removeprefix("run_") == PID


def test_extracting_an_existing_pattern_decides_nothing() -> None:
    """A redelivered extraction of the same run appends no second pattern."""
    state = _extracted()
    assert state.status is PatternStatus.ACTIVE
    assert state.version == 1
    assert decide(state, _command(ExtractPattern, run_id=RUN), _ctx(), EXTRACTION) == []  # type: ignore[arg-type]


def test_editing_makes_a_new_version_and_keeps_the_old() -> None:
    """An edit appends version 2 with the replaced parts; version 1 stays in the state."""
    state = _extracted()
    [event] = decide(state, _command(EditPattern, name="greet better", summary="Better."), _ctx())  # type: ignore[arg-type]
    assert isinstance(event, PatternEdited)
    assert event.version == 2
    assert event.content.steps == CONTENT.steps
    assert event.content_hash == event.content.digest()
    state = evolve(state, event)
    assert [v.content.name for v in state.versions] == ["greet", "greet better"]
    assert decide(state, _command(EditPattern, name="greet better"), _ctx()) == []  # type: ignore[arg-type]


def test_retire_and_restore() -> None:
    """Retire and restore flip the status; repeating either does nothing; a missing pattern is refused."""
    state = _extracted()
    [retired] = decide(state, _command(RetirePattern, reason="old"), _ctx())  # type: ignore[arg-type]
    state = evolve(state, retired)
    assert state.status is PatternStatus.RETIRED
    assert decide(state, _command(RetirePattern), _ctx()) == []  # type: ignore[arg-type]
    [restored] = decide(state, _command(RestorePattern), _ctx())  # type: ignore[arg-type]
    assert evolve(state, restored).status is PatternStatus.ACTIVE
    with pytest.raises(Rejected):
        decide(PatternState(pattern_id=PID), _command(RetirePattern), _ctx())  # type: ignore[arg-type]


def test_fold_replays_the_history() -> None:
    """Folding the events gives the same state as evolving them one by one."""
    [event] = decide(PatternState(pattern_id=PID), _command(ExtractPattern, run_id=RUN), _ctx(), EXTRACTION)  # type: ignore[arg-type]
    assert isinstance(event, PatternExtracted)
    assert fold(PID, [event]) == _extracted()


def test_task_types_are_data_and_an_unknown_one_is_an_error() -> None:
    """The catalogue names the task types with templates; an unknown name raises, never falls back."""
    names = task_types.names()
    assert {"code", "research", "writing", "data_analysis", "document_processing", "security_review"} <= set(
        names
    )
    prompt = task_types.get("code").prompt("Do {it}", "<reference_workflow>x</reference_workflow>")
    assert prompt.startswith("Do {it}\n\nThis is a code task")
    assert prompt.endswith("</reference_workflow>")
    with pytest.raises(task_types.UnknownTaskType, match="unknown task type 'poetry'"):
        task_types.get("poetry")
