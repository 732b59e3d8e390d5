"""Fixtures for the `swarm` command tests: a `swarm up` child process on a temporary data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import bus
from tests.swarm._up import Up, start_up


@pytest.fixture
async def up(tmp_path: Path, server_settings: bus.ServerSettings) -> AsyncIterator[Up]:
    running = await start_up(tmp_path / "data")
    yield running
    if running.process.returncode is None:
        running.process.kill()
        await running.process.wait()
