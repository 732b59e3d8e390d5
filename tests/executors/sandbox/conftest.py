"""Sandbox fixtures: a Podman API service and the runner image per session, the three backends, and a
run directory with a model socket that uid 1000 can reach.

Async fixtures here run on the session's event loop (the Podman service outlives single tests); test
modules using them mark themselves `pytest.mark.asyncio(loop_scope="session")`.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from executors.sandbox import (
    RUNNER_IMAGE,
    Backend,
    BubblewrapBackend,
    ContainerBackend,
    Exit,
    ProcessBackend,
    Resources,
    Spec,
    ensure_image,
    podman_service,
)
from tests.conftest import need
from tests.executors._codex import CODEX_DIR, codex_binary

MODEL_ANSWER = "model-ok"
BACKENDS = ("container", "bubblewrap", "process")


@dataclass(frozen=True, slots=True)
class RunDir:
    """A run's host directories, searchable by uid 1000 (bubblewrap opens them as that user)."""

    root: Path

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def codex_home(self) -> Path:
        return self.root / "codex-home"

    @property
    def socket(self) -> Path:
        return self.root / "model" / "model.sock"

    def spec(
        self,
        run_id: str,
        *command: str,
        env: Mapping[str, str] | None = None,
        resources: Resources | None = None,
    ) -> Spec:
        """A spec running `command` with this directory's workspace, CODEX_HOME and model socket."""
        return Spec(
            run_id=run_id,
            command=command,
            workspace=self.workspace,
            codex_home=self.codex_home,
            model_socket=self.socket,
            env=env or {},
            resources=resources or Resources(),
        )


def _required(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        need(tool, f"not installed (apt-get install -y {package})")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def podman_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A Podman Docker-compatible API service for the session, with the runner image built."""
    _required("podman", "podman")
    _required("runc", "runc")
    codex_binary()
    socket = tmp_path_factory.mktemp("podman") / "podman.sock"
    async with podman_service(socket) as url:
        await ensure_image(url, RUNNER_IMAGE, CODEX_DIR)
        yield url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def container_backend(podman_url: str) -> ContainerBackend:
    backend = ContainerBackend(podman_url, RUNNER_IMAGE)
    await backend.check()
    return backend


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def bubblewrap_backend() -> BubblewrapBackend:
    _required("bwrap", "bubblewrap")
    _required("socat", "socat")
    backend = BubblewrapBackend(codex_binary())
    await backend.check()
    return backend


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def process_backend() -> ProcessBackend:
    backend = ProcessBackend(codex_binary())
    await backend.check()
    return backend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each backend in turn (tests restrict the set with `only(...)`)."""
    found: Backend = request.getfixturevalue(f"{request.param}_backend")
    return found


def only(backend: Backend, *names: str) -> None:
    """Skip the test for a backend it does not apply to (not a missing component: never fails in CI)."""
    if backend.name not in names:
        pytest.skip(f"not a property of the {backend.name} backend")


async def containers_of(backend: Backend, run_id: str) -> list[str]:
    """The engine's containers labelled with `run_id` (any state); [] for a backend without any."""
    if isinstance(backend, ContainerBackend):
        return await backend.containers(run_id)
    return []


@pytest.fixture
def run_dir() -> Iterator[RunDir]:
    """Workspace, CODEX_HOME and model socket directory under a fresh world-searchable directory."""
    root = Path(tempfile.mkdtemp(prefix="swarm-sandbox-"))
    root.chmod(0o755)
    made = RunDir(root)
    for directory in (made.workspace, made.codex_home, made.socket.parent):
        directory.mkdir(mode=0o755)
    yield made
    shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session")
async def model(run_dir: RunDir) -> AsyncIterator[RunDir]:
    """An HTTP server on the run's model socket answering `GET /probe` with MODEL_ANSWER."""
    app = web.Application()
    app.router.add_get("/probe", _probe)
    async with serve_unix(app, run_dir.socket):
        yield run_dir


async def _probe(request: web.Request) -> web.Response:
    return web.Response(text=MODEL_ANSWER)


@asynccontextmanager
async def serve_unix(app: web.Application, path: Path) -> AsyncIterator[None]:
    """Serve `app` on the unix socket `path`, 0666 like the model proxy's, until the context ends."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.UnixSite(runner, str(path)).start()
        path.chmod(0o666)
        yield
    finally:
        await runner.cleanup()


async def run_to_end(backend: Backend, spec: Spec, within: float = 30.0) -> tuple[list[str], Exit]:
    """Run `spec` to its end, failing past `within` seconds: its stdout lines and its exit."""
    async with asyncio.timeout(within), backend.open(spec) as sandbox:
        lines = [line.decode() async for line in sandbox.lines()]
        return lines, await sandbox.wait()


SMALL = Resources(memory_bytes=64 << 20, pids=64, file_size_bytes=1 << 20, tmpfs_bytes=16 << 20)
