"""Patterns end to end: a succeeded run becomes a pattern, and a later run gets it in its prompt."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

import bus
from executors.patterns import Extractor
from executors.sandbox import Backend
from executors.scripted import (
    ExecCommand,
    JsonAnswer,
    Message,
    Respond,
    Script,
    ScriptedModel,
    Usage,
    catalogue,
)
from executors.settings import Settings
from projectors.projector import Projector
from projectors.service import query, serve
from projectors.store import open_store
from schemas import (
    AnyEvent,
    EditPattern,
    ExtractPattern,
    FailureReason,
    IdSource,
    Kind,
    PatternApplied,
    PatternEdited,
    PatternExtracted,
    RunFailed,
    RunSucceeded,
    decode_event,
    pattern_id_for,
    subjects,
)
from tests.executors._system import (
    ACTOR,
    TENANT,
    Arrived,
    create_project,
    follow_run,
    running,
    sample_project,
    settings_for,
    start_run,
)

ids = IdSource()
REFINED = {
    "name": "Add a greeting file",
    "summary": "Create the greeting file, then personalise it.",
    "steps": [
        {"kind": "create", "text": "Create the greeting and the app", "target": "greeting.txt, src/app.py"},
        {"kind": "edit", "text": "Name the audience in the greeting", "target": "greeting.txt"},
    ],
    "variables": [
        {"name": "greeting_path", "kind": "path", "example": "greeting.txt", "description": "the file"}
    ],
}
SECRET_RUN = Script(
    turns=[
        Respond(
            items=[ExecCommand(cmd="echo password=hunter2-Secret-99 sk-proj-abcdefghijklmnop1234567890")]
        ),
        Respond(items=[Message(text="Done.")], usage=Usage(input_tokens=10, output_tokens=2)),
    ]
)


def _refining(answer: Respond) -> dict[str, Script]:
    return {"pattern_refinement": Script(turns=[answer]), "secret": SECRET_RUN}


@asynccontextmanager
async def system(
    conn: bus.Connection, settings: Settings, backend: Backend, tmp_path: Path
) -> AsyncIterator[None]:
    """Executor, registry, pattern extractor and a projector replica answering queries."""
    extractor = Extractor(conn, settings)
    with open_store(tmp_path / "projector.duckdb") as store:
        projector = Projector(conn, store)
        async with (
            serve(conn, projector, store),
            running(conn, settings, backend),
            asyncio.TaskGroup() as tasks,
        ):
            tasks.create_task(projector.run())
            tasks.create_task(extractor.run())
            try:
                yield
            finally:
                await extractor.shutdown(1.0)
                projector.shutdown()


async def pattern_events(
    conn: bus.Connection, pattern_id: str, count: int = 1, within: float = 60.0
) -> list[tuple[int, AnyEvent]]:
    """The first `count` events of a pattern, waiting for them."""
    found: list[tuple[int, AnyEvent]] = []
    async with asyncio.timeout(within):
        async for record in conn.log.follow(subjects.events(TENANT, "pattern", pattern_id)):
            found.append((record.seq, decode_event(record.data)))
            if len(found) == count:
                return found
    raise AssertionError("the pattern's events ended")


async def drained(conn: bus.Connection, durable: str, within: float = 30.0) -> None:
    """Until the work queue has nothing pending or unacknowledged."""
    async with asyncio.timeout(within):
        while True:
            info = await conn.js.consumer_info(conn.settings.stream, durable)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.05)


def _texts(requests: list[Any]) -> str:
    return json.dumps([request.body for request in requests])


async def test_a_succeeded_run_teaches_the_next_one(
    conn: bus.Connection, container_backend: Backend, tmp_path: Path
) -> None:
    """Run 1 succeeds → its pattern is extracted with provenance → run 2 (auto) gets it in its prompt."""
    answer = Respond(items=[JsonAnswer(value=REFINED)])
    async with ScriptedModel(scripts=_refining(answer)) as model:
        settings = settings_for(tmp_path, model.base_url)
        async with system(conn, settings, container_backend, tmp_path):
            project_id = await create_project(conn, sample_project(tmp_path / "project"))
            first = await start_run(conn, project_id, "[script:edit] add a greeting file for the swarm")
            arrived = await follow_run(conn, first.run_id, Arrived())
            assert isinstance(arrived.terminal, RunSucceeded)
            pid = pattern_id_for(first.run_id)
            [(seq, extracted)] = await pattern_events(conn, pid)
            assert isinstance(extracted, PatternExtracted)
            assert extracted.refinement == "model"
            assert extracted.content.name == "Add a greeting file"
            provenance = extracted.provenance
            assert provenance.run_id == first.run_id
            assert provenance.first_seq == arrived.records[0].seq
            assert provenance.last_seq == arrived.records[-1].seq
            assert provenance.content_hash == extracted.content.digest()
            [refine_call] = [r for r in model.requests if r.script == "pattern_refinement"]
            assert refine_call.body["text"]["format"]["type"] == "json_schema"

            await query(conn, TENANT, "get_pattern", {"pattern_id": pid}, min_seq=seq)
            second = await start_run(
                conn, project_id, "[script:edit] add a greeting file for the team", auto_patterns=True
            )
            later = await follow_run(conn, second.run_id, Arrived())
            assert isinstance(later.terminal, RunSucceeded)
            [applied] = later.of(PatternApplied)
            assert isinstance(applied, PatternApplied)
            assert [(p.pattern_id, p.version, p.selected_by) for p in applied.patterns] == [(pid, 1, "auto")]
            prompt = _texts(model.requests_for(second.run_id)[:1])
            assert "<reference_workflow" in prompt
            assert "Name the audience in the greeting" in prompt
            assert "<reference_workflow" not in _texts(model.requests_for(first.run_id))

            again = ExtractPattern(
                id=ids.new(Kind.COMMAND), at=datetime.now(UTC), tenant=TENANT, actor=ACTOR, pattern_id=pid,
                run_id=first.run_id,
            )  # fmt: skip
            await conn.log.send(again)
            await conn.log.send(again, idempotency_key=f"extract-{first.run_id}")
            await drained(conn, "patterns")
            assert (await conn.log.position(subjects.events(TENANT, "pattern", pid))).seq == seq
            stats = await query(
                conn, TENANT, "get_pattern", {"pattern_id": pid}, min_seq=later.records[-1].seq
            )
            assert stats["uses"] == 1
            assert stats["succeeded"] == 1


async def test_bad_model_output_falls_back_and_edits_are_versions(
    conn: bus.Connection, process_backend: Backend, tmp_path: Path
) -> None:
    """Malformed refinement keeps the baseline (as a fallback); an edit is version 2; runs record it."""
    async with ScriptedModel(scripts=_refining(Respond(items=[Message(text="{not json")]))) as model:
        settings = settings_for(tmp_path, model.base_url)
        async with system(conn, settings, process_backend, tmp_path):
            project_id = await create_project(conn, sample_project(tmp_path / "project"))
            first = await start_run(conn, project_id, "[script:edit] add a greeting file")
            assert isinstance((await follow_run(conn, first.run_id, Arrived())).terminal, RunSucceeded)
            pid = pattern_id_for(first.run_id)
            [(_, extracted)] = await pattern_events(conn, pid)
            assert isinstance(extracted, PatternExtracted)
            assert extracted.refinement == "fallback"
            assert "not a valid pattern" in extracted.refinement_detail
            assert [s.kind for s in extracted.content.steps] == ["create"]
            assert {s.target for s in extracted.content.steps} == {"greeting.txt, src/app.py"}

            edit = EditPattern(
                id=ids.new(Kind.COMMAND), at=datetime.now(UTC), tenant=TENANT, actor=ACTOR, pattern_id=pid,
                name="Greeting v2", summary="Edited by a person.",
            )  # fmt: skip
            await conn.log.send(edit)
            [_, (_, edited)] = await pattern_events(conn, pid, count=2)
            assert isinstance(edited, PatternEdited)
            assert edited.version == 2

            second = await start_run(conn, project_id, "[script:edit] again", pattern_ids=[pid])
            later = await follow_run(conn, second.run_id, Arrived())
            [applied] = later.of(PatternApplied)
            assert isinstance(applied, PatternApplied)
            assert [(p.version, p.selected_by) for p in applied.patterns] == [(2, "explicit")]
            assert "Edited by a person." in _texts(model.requests_for(second.run_id)[:1])


async def test_secrets_never_reach_a_pattern(
    conn: bus.Connection, process_backend: Backend, tmp_path: Path
) -> None:
    """Secrets in the instructions, the commands and the model's answer are scrubbed, as are host paths."""
    leaky = dict(REFINED, summary="Use token ghp_abcdefghijklmnopqrstuvwxyz0123456789 from " + str(tmp_path))
    async with ScriptedModel(scripts=_refining(Respond(items=[JsonAnswer(value=leaky)]))) as model:
        settings = settings_for(tmp_path, model.base_url)
        async with system(conn, settings, process_backend, tmp_path):
            project_id = await create_project(conn, sample_project(tmp_path / "project"))
            instructions = (
                "[script:secret] deploy with AKIAIOSFODNN7EXAMPLE and Authorization: Bearer abcdefgh12345678"
            )
            first = await start_run(conn, project_id, instructions)
            assert isinstance((await follow_run(conn, first.run_id, Arrived())).terminal, RunSucceeded)
            [(_, extracted)] = await pattern_events(conn, pattern_id_for(first.run_id))
    encoded = msgspec.json.encode(extracted).decode()
    for secret in (
        "hunter2-Secret-99",
        "sk-proj-abcdefghij",
        "ghp_abcdefghij",
        "AKIAIOSFODNN7EXAMPLE",
        "abcdefgh12345678",
    ):
        assert secret not in encoded
    assert str(tmp_path) not in encoded
    assert "[REDACTED]" in encoded
    sent = _texts([r for r in model.requests if r.script == "pattern_refinement"])
    assert "hunter2-Secret-99" not in sent
    assert "AKIAIOSFODNN7EXAMPLE" not in sent


async def test_an_unknown_task_type_fails_the_run_clearly(
    conn: bus.Connection, process_backend: Backend, tmp_path: Path
) -> None:
    """A run with a task type not in the catalogue fails as an invalid request naming it, without starting."""
    async with (
        ScriptedModel(scripts=catalogue(None, {})) as model,
        running(conn, settings_for(tmp_path, model.base_url), process_backend),
    ):
        project_id = await create_project(conn, sample_project(tmp_path / "project"))
        command = await start_run(conn, project_id, "write a poem", task_type="poetry")
        arrived = await follow_run(conn, command.run_id, Arrived())
    terminal = arrived.terminal
    assert isinstance(terminal, RunFailed)
    assert terminal.reason is FailureReason.INVALID_REQUEST
    assert "unknown task type 'poetry'" in terminal.detail
    assert arrived.types() == ["run.failed"]
