"""Real runs: the pinned Codex CLI in real containers, driven by commands on a real log, to their end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import bus
from executors.sandbox import Backend
from executors.scripted import Message, Respond, Script, ScriptedModel, Usage, catalogue
from schemas import (
    AgentMessage,
    ArtifactStored,
    CommandStarted,
    FailureReason,
    FilesChanged,
    Kind,
    ModelCallRecorded,
    RunCancelled,
    RunFailed,
    RunLimits,
    RunStarted,
    RunSucceeded,
    RunTimedOut,
    WorkspacePrepared,
)
from tests.executors._system import (
    Arrived,
    cancel_run,
    create_project,
    follow_run,
    ids,
    running,
    sample_project,
    settings_for,
    start_run,
    verify_chain,
    wait_for,
)
from tests.executors.conftest import containers_of

SLOW_EDIT = {
    "slow_edit": Script(
        turns=[
            *catalogue(None, {})["edit"].turns[:2],
            Respond(
                items=[Message(text="Added greeting.txt and src/app.py.")],
                usage=Usage(input_tokens=180, cached_tokens=140, output_tokens=15),
                delay_ms=1500,
            ),
        ]
    )
}


@pytest.fixture
async def model() -> AsyncIterator[ScriptedModel]:
    async with ScriptedModel(scripts=SLOW_EDIT) as server:
        yield server


async def _artifact(conn: bus.Connection, arrived: Arrived, name: str) -> bytes:
    [stored] = [event for event in arrived.of(ArtifactStored) if event.name == name]
    assert isinstance(stored, ArtifactStored)
    return await conn.blobs.get(stored.blob.sha256)


async def test_a_run_succeeds_streams_its_steps_and_stores_its_diff(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """Codex creates and edits files: events arrive while it runs, the diff is the change, usage is kept."""
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    settings = settings_for(tmp_path, model.base_url)
    async with running(conn, settings, container_backend):
        command = await start_run(conn, project_id, "[script:slow_edit] greet the swarm")
        arrived = await follow_run(conn, command.run_id, Arrived())
    types = arrived.types()
    assert types[:2] == ["run.started", "run.workspace_prepared"]
    assert isinstance(arrived.terminal, RunSucceeded), arrived.terminal
    first_change = arrived.times[types.index("run.files_changed")]
    assert arrived.times[-1] - first_change > 1.0  # the steps came while Codex was still working
    summary = arrived.terminal.summary
    assert summary.files_changed == ["greeting.txt", "src/app.py"]
    assert summary.usage.input_tokens == 100 + 140 + 180
    assert summary.usage.output_tokens == 30 + 25 + 15
    assert summary.final_message == "Added greeting.txt and src/app.py."
    diff = (await _artifact(conn, arrived, "diff.patch")).decode()
    assert "+swarm" in diff
    assert '+print("hello")' in diff
    assert "README.md" not in diff
    assert "main.py" not in diff
    calls = arrived.of(ModelCallRecorded)
    assert len(calls) == 3
    assert all(call.status == 200 for call in calls)
    assert [c.usage.input_tokens for c in calls] == [100, 140, 180]  # type: ignore[attr-defined]
    assert len(arrived.of(FilesChanged)) == 2
    assert arrived.of(AgentMessage)
    assert verify_chain(arrived).ok
    assert len({event.id for event in arrived.events}) == len(arrived.events)


async def test_a_codex_failure_is_a_failed_run(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """A turn that fails at the model is reported as `codex_error`, never as success."""
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    async with running(conn, settings_for(tmp_path, model.base_url), container_backend):
        command = await start_run(conn, project_id, "[script:fail] do something")
        arrived = await follow_run(conn, command.run_id, Arrived())
    terminal = arrived.terminal
    assert isinstance(terminal, RunFailed)
    assert terminal.reason is FailureReason.CODEX_ERROR
    assert "scripted failure" in terminal.detail
    assert not arrived.of(RunSucceeded)


async def test_cancel_stops_a_running_sandbox(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """Cancel during a long command: the run is cancelled by the requester and its container is gone."""
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    settings = settings_for(tmp_path, model.base_url)
    async with running(conn, settings, container_backend):
        command = await start_run(conn, project_id, "[script:slow] wait a minute")
        arrived = Arrived()
        following = asyncio.create_task(follow_run(conn, command.run_id, arrived))
        await wait_for(arrived, CommandStarted)
        asked = time.monotonic()
        await cancel_run(conn, command.run_id, reason="changed my mind")
        await following
        took = time.monotonic() - asked
    terminal = arrived.terminal
    assert isinstance(terminal, RunCancelled)
    assert terminal.cancelled_by == "key_tester"
    assert terminal.reason == "changed my mind"
    assert took < settings.cancel_grace + 5.0
    assert await containers_of(container_backend, command.run_id) == []


async def test_a_run_cancelled_while_queued_never_starts(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """A cancel that comes before any executor took the run ends it without a sandbox or a start."""
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    command = await start_run(conn, project_id, "[script:hello] never")
    await cancel_run(conn, command.run_id)
    async with running(conn, settings_for(tmp_path, model.base_url), container_backend):
        arrived = await follow_run(conn, command.run_id, Arrived())
    assert arrived.types() == ["run.cancelled"]
    assert not model.requests


async def test_a_queued_run_is_cancelled_while_executors_are_busy(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """With every slot busy, a cancel of a waiting run ends it at once; it is never started later."""
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    settings = settings_for(tmp_path, model.base_url, concurrency=1)
    async with running(conn, settings, container_backend):
        busy = await start_run(conn, project_id, "[script:slow] occupy the slot")
        occupied = Arrived()
        following = asyncio.create_task(follow_run(conn, busy.run_id, occupied))
        await wait_for(occupied, CommandStarted)
        waiting = await start_run(conn, project_id, "[script:hello] wait in line")
        await cancel_run(conn, waiting.run_id)
        arrived = await follow_run(conn, waiting.run_id, Arrived(), within=10.0)
        await cancel_run(conn, busy.run_id)
        await following
    assert arrived.types() == ["run.cancelled"]
    assert isinstance(occupied.terminal, RunCancelled)


async def test_deadline_times_the_run_out(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """A run past its deadline is stopped: timed out, container gone."""
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    async with running(conn, settings_for(tmp_path, model.base_url), container_backend):
        command = await start_run(conn, project_id, "[script:slow] too slow", RunLimits(deadline_seconds=3))
        arrived = await follow_run(conn, command.run_id, Arrived())
    terminal = arrived.terminal
    assert isinstance(terminal, RunTimedOut)
    assert (terminal.limit, terminal.seconds) == ("deadline", 3)
    assert await containers_of(container_backend, command.run_id) == []


async def test_silence_times_the_run_out(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """Codex printing nothing for longer than the idle limit ends the run as timed out (idle)."""
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    async with running(conn, settings_for(tmp_path, model.base_url), container_backend):
        command = await start_run(conn, project_id, "[script:slow] silent", RunLimits(idle_seconds=2))
        arrived = await follow_run(conn, command.run_id, Arrived())
    terminal = arrived.terminal
    assert isinstance(terminal, RunTimedOut)
    assert (terminal.limit, terminal.seconds) == ("idle", 2)
    assert arrived.of(CommandStarted)
    assert await containers_of(container_backend, command.run_id) == []


async def test_budget_exceeded_stops_the_run(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """A run whose model calls pass its token budget fails with `budget_exceeded`."""
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    async with running(conn, settings_for(tmp_path, model.base_url), container_backend):
        command = await start_run(conn, project_id, "[script:edit] spend", RunLimits(max_tokens=150))
        arrived = await follow_run(conn, command.run_id, Arrived())
    terminal = arrived.terminal
    assert isinstance(terminal, RunFailed)
    assert terminal.reason is FailureReason.BUDGET_EXCEEDED


async def test_an_ended_run_redelivered_is_only_acknowledged(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """The same start command delivered again after the run ended adds no event."""
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    async with running(conn, settings_for(tmp_path, model.base_url), container_backend):
        command = await start_run(conn, project_id, "[script:hello] once")
        arrived = await follow_run(conn, command.run_id, Arrived())
        await conn.log.send(command, idempotency_key=f"{command.id}-again")  # a second delivery
        again = await start_run(conn, project_id, "[script:hello] a marker run after it")
        await follow_run(conn, again.run_id, Arrived())
    replay = await follow_run(conn, command.run_id, Arrived())
    assert [event.id for event in replay.events] == [event.id for event in arrived.events]
    assert len(arrived.of(RunStarted)) == 1


async def test_an_unknown_project_is_an_invalid_request(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """A run on a project that does not exist fails as `invalid_request` without starting."""
    async with running(conn, settings_for(tmp_path, model.base_url), container_backend):
        command = await start_run(conn, "prj_01JD0000000000000000000000", "[script:hello] hi")
        arrived = await follow_run(conn, command.run_id, Arrived())
    assert arrived.types() == ["run.failed"]
    terminal = arrived.terminal
    assert isinstance(terminal, RunFailed)
    assert terminal.reason is FailureReason.INVALID_REQUEST


async def test_a_run_sent_before_its_project_is_created_waits_for_it(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """Project and run commands go to different workers: a run whose project's create command is in the
    log, but not yet applied, is retried until it is, not failed as an unknown project."""
    project_id = ids.new(Kind.PROJECT)
    command = await start_run(conn, project_id, "[script:hello] hi")
    await create_project(conn, sample_project(tmp_path / "project"), project_id)
    async with running(conn, settings_for(tmp_path, model.base_url), container_backend):
        arrived = await follow_run(conn, command.run_id, Arrived())
    assert isinstance(arrived.terminal, RunSucceeded)
    assert not arrived.of(RunFailed)


async def test_from_run_starts_from_an_earlier_runs_workspace(
    conn: bus.Connection, container_backend: Backend, model: ScriptedModel, tmp_path: Path
) -> None:
    """A run with `from_run_id` starts from the earlier run's files; its diff shows only its own change."""
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    async with running(conn, settings_for(tmp_path, model.base_url), container_backend):
        first = await start_run(conn, project_id, "[script:edit] first")
        await follow_run(conn, first.run_id, Arrived())
        second = await start_run(conn, project_id, "[script:hello] second", from_run_id=first.run_id)
        arrived = await follow_run(conn, second.run_id, Arrived())
    assert isinstance(arrived.terminal, RunSucceeded)
    [prepared] = arrived.of(WorkspacePrepared)
    assert isinstance(prepared, WorkspacePrepared)
    assert prepared.source == "run"
    files = (await _artifact(conn, arrived, "files.txt")).decode()
    assert "greeting.txt" in files
    assert "hello.txt" in files
    diff = (await _artifact(conn, arrived, "diff.patch")).decode()
    assert "hello.txt" in diff
    assert "greeting.txt" not in diff
