"""The executor role as one unit: sandbox backend, model proxy and executor, stopped in order."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

import bus
from executors.executor import Executor
from executors.patterns import Extractor
from executors.proxy import ModelProxy, Upstream
from executors.registry import Registry
from executors.runner import Services
from executors.sandbox import (
    Backend,
    BubblewrapBackend,
    ContainerBackend,
    ProcessBackend,
    SandboxError,
)
from executors.settings import Settings

log = structlog.get_logger(__name__)

ROOT = Path(__file__).resolve().parents[1]
_NPM_BINARY = "node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"


class ConfigurationError(Exception):
    """The executor cannot start as configured; the message says what to change."""


def codex_binary(settings: Settings) -> Path:
    """The host's static Codex binary for the local backends: configured, else the project's npm install."""
    configured = settings.sandbox.codex_binary
    candidates = [Path(configured)] if configured else [ROOT / ".codex-cli" / _NPM_BINARY]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigurationError(
        f"no Codex CLI at {candidates[0]}; install it with "
        "`npm install --prefix .codex-cli @openai/codex@0.169.0` or set executor.sandbox.codex_binary"
    )


async def choose_backend(settings: Settings) -> Backend:
    """The configured backend; `auto` prefers a reachable container engine, then bubblewrap."""
    sandbox = settings.sandbox
    match sandbox.backend:
        case "container":
            return await _container(settings)
        case "bubblewrap":
            return BubblewrapBackend(codex_binary(settings))
        case "process":
            return _unsafe(settings)
        case "auto":
            try:
                return await _container(settings)
            except SandboxError as exc:
                log.warning("container_engine_unavailable", engine=sandbox.engine_url, problem=exc.detail)
            if shutil.which("bwrap"):
                return BubblewrapBackend(codex_binary(settings))
            return _unsafe(settings)


async def _container(settings: Settings) -> Backend:
    backend = ContainerBackend(settings.sandbox.engine_url, settings.sandbox.image)
    await backend.check()
    return backend


def _unsafe(settings: Settings) -> Backend:
    log.warning(
        "sandbox_unsafe",
        detail="runs execute as plain processes on this machine with no isolation; "
        "install a container engine or bubblewrap",
    )
    return ProcessBackend(codex_binary(settings))


@asynccontextmanager
async def executor(conn: bus.Connection, settings: Settings, backend: Backend) -> AsyncIterator[Executor]:
    """An executor with its model proxy, not yet running."""
    Path(settings.work_dir).mkdir(parents=True, exist_ok=True)
    upstream = Upstream(base_url=settings.upstream.base_url, api_key=settings.upstream.api_key)
    # Unix socket paths are limited to 107 bytes: the sockets live in a short private directory.
    with tempfile.TemporaryDirectory(prefix="swarm-proxy-") as sockets:
        os.chmod(sockets, 0o755)  # noqa: S103  # the sandbox user must reach its run's socket inside
        async with ModelProxy(upstream, Path(sockets)) as proxy:
            yield Executor(Services(conn=conn, settings=settings, backend=backend, proxy=proxy))


async def run(
    conn: bus.Connection, settings: Settings, stop: asyncio.Event, *, backend: Backend | None = None
) -> None:
    """Execute runs and project commands until `stop` is set; then stop taking work and give the runs
    in flight `shutdown_grace` seconds before handing them back for redelivery."""
    if not settings.upstream.base_url:
        raise ConfigurationError("no model configured: set executor.upstream.base_url (and api_key)")
    backend = backend or await choose_backend(settings)
    registry = Registry(conn)
    extractor = Extractor(conn, settings)
    async with executor(conn, settings, backend) as replica, asyncio.TaskGroup() as tasks:
        tasks.create_task(replica.run())
        tasks.create_task(registry.run())
        tasks.create_task(extractor.run())
        await stop.wait()
        await registry.shutdown()
        await extractor.shutdown()
        await replica.shutdown(grace=settings.shutdown_grace)
