"""Shared fixtures: a real nats-server with JetStream per test, and a provisioned connection to it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import bus

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need(component: str, reason: str) -> None:
    """A missing real component fails the test in CI and skips it elsewhere."""
    if IN_CI:
        pytest.fail(f"{component} is required in CI: {reason}")
    pytest.skip(f"{component} unavailable: {reason}")


@pytest.fixture
def server_settings() -> bus.ServerSettings:
    try:
        binary = bus.find_binary(None)
    except bus.ServerBinaryMissing as exc:
        need("nats-server", str(exc))
    return bus.ServerSettings(binary=binary)


@pytest.fixture
async def nats_server(
    server_settings: bus.ServerSettings, tmp_path: Path
) -> AsyncIterator[bus.RunningServer]:
    async with bus.embedded(server_settings, tmp_path / "nats") as server:
        yield server


@pytest.fixture
def bus_settings(nats_server: bus.RunningServer) -> bus.Settings:
    return bus.Settings(url=nats_server.url, publish_timeout=2.0)


@pytest.fixture
async def conn(bus_settings: bus.Settings) -> AsyncIterator[bus.Connection]:
    async with bus.connect(bus_settings, name="test") as connection:
        await connection.provision()
        yield connection
