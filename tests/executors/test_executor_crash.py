"""An executor killed mid-run loses nothing: another takes the command over and ends the run exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import bus
from executors.role import codex_binary
from executors.sandbox import Backend, ProcessBackend
from executors.scripted import ScriptedModel
from schemas import CommandStarted, FailureReason, LineQuarantined, RunFailed, RunStarted, RunSucceeded
from tests.executors._system import (
    Arrived,
    create_project,
    follow_run,
    running,
    sample_project,
    settings_for,
    start_run,
    verify_chain,
    wait_for,
)
from tests.executors.conftest import containers_of


@pytest.fixture
async def model() -> AsyncIterator[ScriptedModel]:
    async with ScriptedModel() as server:
        yield server


async def _executor_process(
    bus_url: str, engine_url: str, work_dir: Path, upstream: str
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "SWARM_BUS__URL": bus_url,
        "SWARM_DATA_DIR": str(work_dir.parent),
        "SWARM_EXECUTOR__WORK_DIR": str(work_dir),
        "SWARM_EXECUTOR__ACK_WAIT": "3",
        "SWARM_EXECUTOR__UPSTREAM__BASE_URL": upstream,
        "SWARM_EXECUTOR__SANDBOX__BACKEND": "container",
        "SWARM_EXECUTOR__SANDBOX__ENGINE_URL": engine_url,
        "SWARM_LOG__FORMAT": "json",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "swarm.cli", "executor", env=env, stdout=asyncio.subprocess.DEVNULL
    )


async def test_a_killed_executors_run_is_ended_by_another(
    conn: bus.Connection,
    bus_settings: bus.Settings,
    podman_url: str,
    container_backend: Backend,
    model: ScriptedModel,
    tmp_path: Path,
) -> None:
    """SIGKILL mid-command: the command is redelivered, the run ends once, no event is duplicated."""
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    settings = settings_for(tmp_path, model.base_url)
    doomed = await _executor_process(bus_settings.url, podman_url, tmp_path / "doomed", model.base_url)
    try:
        command = await start_run(conn, project_id, "[script:slow] a long command")
        arrived = Arrived()
        following = asyncio.create_task(follow_run(conn, command.run_id, arrived, within=90.0))
        await wait_for(arrived, CommandStarted, within=60.0)
    finally:
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
    async with running(conn, settings, container_backend):
        await following
    terminal = arrived.terminal
    assert isinstance(terminal, RunFailed)
    assert terminal.reason is FailureReason.EXECUTOR_LOST
    assert len(arrived.of(RunStarted)) == 1
    assert verify_chain(arrived).ok
    ids = Counter(event.id for event in arrived.events)
    assert max(ids.values()) == 1
    assert await containers_of(container_backend, command.run_id) == []


async def test_malformed_output_is_quarantined_and_the_run_ends(
    conn: bus.Connection, model: ScriptedModel, tmp_path: Path
) -> None:
    """Lines Codex should never print become quarantine events; the run still succeeds on its real output."""
    real = codex_binary(settings_for(tmp_path, model.base_url))
    shim = tmp_path / "codex-shim"
    shim.write_text(
        "#!/bin/sh\n"
        "echo 'this is not JSON'\n"
        'echo \'{"type":"item.completed","item":{"id":"x","type":"hologram"}}\'\n'
        f'exec {real} "$@"\n'
    )
    shim.chmod(0o755)
    project_id = await create_project(conn, sample_project(tmp_path / "project"))
    settings = settings_for(tmp_path, model.base_url)
    async with running(conn, settings, ProcessBackend(shim)):
        command = await start_run(conn, project_id, "[script:hello] greet")
        arrived = await follow_run(conn, command.run_id, Arrived())
    quarantined = arrived.of(LineQuarantined)
    assert [event.raw.text for event in quarantined] == [  # type: ignore[attr-defined]
        "this is not JSON",
        '{"type":"item.completed","item":{"id":"x","type":"hologram"}}',
    ]
    assert isinstance(arrived.terminal, RunSucceeded)
