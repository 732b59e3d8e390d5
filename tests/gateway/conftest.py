"""A whole system for gateway tests: real nats-server, a registry, a real projector on DuckDB, and the
gateway on aiohttp's real test server, with an admin key bootstrapped for tenant `acme`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import bus
import gateway
from executors.registry import Registry
from projectors import role as projector_role
from projectors.settings import Settings as ProjectorSettings
from schemas import Role
from swarm import keys

TENANT = "acme"


@dataclass
class System:
    conn: bus.Connection
    client: TestClient[Any, Any]
    admin: str
    settings: gateway.Settings

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin}"}

    async def key(self, role: Role, tenant: str = TENANT) -> str:
        return (await keys.create(self.conn, tenant, f"{role} key", role)).token


@pytest.fixture
def gateway_settings() -> gateway.Settings:
    return gateway.Settings(port=0)


@contextlib.asynccontextmanager
async def services(conn: bus.Connection, database: Path) -> AsyncIterator[None]:
    """A registry and a projector replica running until the block ends."""
    stop = asyncio.Event()
    registry = Registry(conn)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(registry.run())
        tasks.create_task(projector_role.run(conn, ProjectorSettings(database=str(database)), stop))
        try:
            yield
        finally:
            stop.set()
            await registry.shutdown(1.0)


@pytest.fixture
async def system(
    conn: bus.Connection, tmp_path: Path, gateway_settings: gateway.Settings
) -> AsyncIterator[System]:
    admin = await keys.bootstrap(conn, TENANT)
    assert admin is not None
    async with services(conn, tmp_path / "read.duckdb"):
        app = gateway.create_app(conn, gateway_settings)
        async with TestClient(TestServer(app)) as client:
            yield System(conn=conn, client=client, admin=admin.token, settings=gateway_settings)
