"""The container backend: one locked-down container per run, through the Docker Engine API.

Works against Docker Engine and Podman's Docker-compatible service (`podman system service`). The
`docker` SDK blocks, so every call runs in a thread; stdout is read asynchronously from the attach
socket, which is opened before the container starts so no line is missed and each arrives as written.

    backend = ContainerBackend("unix:///run/podman.sock", RUNNER_IMAGE)
    await backend.check()
    async with backend.open(spec) as sandbox:
        async for line in sandbox.lines(): ...
        exit = await sandbox.wait()
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import docker
import docker.errors
import structlog
from docker.types import Ulimit

from executors.sandbox import _inside
from executors.sandbox._output import Lines, stdout_frames
from executors.sandbox.base import CODEX_HOME, WORKSPACE, Exit, Sandbox, SandboxError, Spec
from executors.settings import RUNNER_IMAGE

log = structlog.get_logger(__name__)

RUN_LABEL = "swarm.run_id"
BUILD_HINT = "build it with deploy/runner/build-local.sh (Podman) or `docker build deploy/runner`"
_WAIT_ATTEMPTS = 100
_NPROC = 1024  # per uid on the host, not per container: `pids_limit` is the per-run bound


class ContainerBackend:
    """Runs each sandbox as a container of `image` on the engine at `url`.

    Each `open` has its own engine client, closed with the sandbox, so the backend holds no connection
    and may be shared by tasks and event loops. `check()` (also done by the first `open`) fails early
    with a `SandboxError` when the engine is unreachable or the image is missing.
    """

    name = "container"

    def __init__(self, url: str, image: str = RUNNER_IMAGE, *, timeout: float = 60.0) -> None:
        self.url, self.image = url, image
        self._timeout = timeout
        self._api_version: str | None = None
        self._version = ""

    @property
    def version(self) -> str:
        """The engine, e.g. `Podman Engine 4.3.1` or `Engine 27.3.1` (Docker); empty before `check()`."""
        return self._version

    @property
    def safe(self) -> bool:
        return True

    async def check(self) -> None:
        """Reach the engine, read its version and make sure the image exists."""
        async with self._connected() as client:
            version = await asyncio.to_thread(_engine_call, self.name, client.version)
            await asyncio.to_thread(_engine_call, self.name, client.images.get, self.image)
        components = version.get("Components") or [{}]
        self._version = f"{components[0].get('Name', 'Docker')} {version['Version']}"
        self._api_version = version.get("ApiVersion")
        log.info("container_engine_checked", url=self.url, version=self._version, image=self.image)

    @asynccontextmanager
    async def open(self, spec: Spec) -> AsyncIterator[Sandbox]:
        """Create, attach to and start the run's container; leaving always removes it (forced)."""
        if not self._version:
            await self.check()
        if (problem := _inside.check_socket(spec)) is not None:
            raise SandboxError(self.name, problem)
        await asyncio.to_thread(_inside.hand_over, spec)
        name = _container_name(spec.run_id)
        async with self._connected() as client:
            try:
                running = await self._start(client, spec, name)
                try:
                    yield running
                finally:
                    running.close()
            finally:
                await asyncio.to_thread(_remove, client, name)

    async def containers(self, run_id: str) -> list[str]:
        """The names of the containers (any state) labelled with `run_id`: none once its sandbox is gone."""
        filters = {"label": f"{RUN_LABEL}={run_id}"}
        async with self._connected() as client:
            found = await asyncio.to_thread(
                _engine_call, self.name, client.api.containers, all=True, filters=filters
            )
        return [name.lstrip("/") for entry in found for name in entry["Names"]]

    async def discard(self, run_id: str) -> None:
        """Remove what a lost executor left of this run (its container may still be running)."""
        names = await self.containers(run_id)
        if names:
            async with self._connected() as client:
                for name in names:
                    await asyncio.to_thread(_remove, client, name)
            log.warning("container_discarded", run_id=run_id, containers=names)

    @asynccontextmanager
    async def _connected(self) -> AsyncIterator[Any]:
        client = await asyncio.to_thread(self._client)
        try:
            yield client
        finally:
            await asyncio.to_thread(client.close)

    def _client(self) -> Any:
        try:
            return docker.DockerClient(base_url=self.url, version=self._api_version, timeout=self._timeout)
        except docker.errors.DockerException as exc:
            raise SandboxError(self.name, f"container engine unreachable at {self.url}: {exc}") from exc

    async def _start(self, client: Any, spec: Spec, name: str) -> _Container:
        container = await self._create(client, spec, name)
        attached = await asyncio.to_thread(_engine_call, self.name, container.attach_socket, params=_ATTACH)
        reader, writer = await _stream(attached)
        try:
            await asyncio.to_thread(_engine_call, self.name, container.start)
        except BaseException:
            writer.close()
            raise
        log.info("container_started", run_id=spec.run_id, container=name, image=self.image)
        return _Container(self.name, container, reader, writer)

    async def _create(self, client: Any, spec: Spec, name: str) -> Any:
        podman = self._version.lower().startswith("podman")
        options = create_options(spec, name, podman=podman)
        create = asyncio.ensure_future(
            asyncio.to_thread(_engine_call, self.name, client.containers.create, self.image, **options)
        )
        try:
            return await asyncio.shield(create)
        except asyncio.CancelledError:
            # The engine finishes creating regardless: wait for it, so the caller's removal finds it.
            await asyncio.wait([create])
            raise


def _stop(container: Any, timeout: int) -> None:
    with suppress(docker.errors.NotFound):
        container.stop(timeout=timeout)


def _remove(client: Any, name: str) -> None:
    with suppress(docker.errors.NotFound):
        client.api.remove_container(name, force=True)
        log.debug("container_removed", container=name)


_ATTACH = {"stdout": 1, "stderr": 0, "stream": 1, "logs": 1}


def create_options(spec: Spec, name: str, *, podman: bool) -> dict[str, Any]:
    """The `containers.create` keyword arguments: no network, read-only, no capabilities, limits."""
    limits = spec.resources
    socket_dir = str(spec.model_socket.parent)
    return {
        "command": _inside.entry_command(spec),
        "name": name,
        "labels": {RUN_LABEL: spec.run_id},
        "environment": {"HOME": _inside.HOME, **spec.env, "CODEX_HOME": CODEX_HOME},
        "user": f"{_inside.AGENT_UID}:{_inside.AGENT_GID}",
        "working_dir": WORKSPACE,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {path: _tmpfs(limits.tmpfs_bytes, podman=podman) for path in (_inside.TMP, _inside.HOME)},
        "volumes": {
            str(spec.workspace): {"bind": WORKSPACE, "mode": "rw"},
            str(spec.codex_home): {"bind": CODEX_HOME, "mode": "rw"},
            socket_dir: {"bind": _inside.MODEL_DIR, "mode": "ro"},  # connecting needs no write access
        },
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,
        "nano_cpus": int(limits.cpus * 1e9),
        "pids_limit": limits.pids,
        "ulimits": [
            Ulimit(name="nofile", soft=1024, hard=1024),
            Ulimit(name="nproc", soft=_NPROC, hard=_NPROC),
            Ulimit(name="fsize", soft=limits.file_size_bytes, hard=limits.file_size_bytes),
        ],
        "init": True,
        "stdin_open": False,
    }


def _tmpfs(size: int, *, podman: bool) -> str:
    # Podman ignores `mode` on a path that exists in the image; `U` chowns the tmpfs to the user.
    return f"rw,nosuid,nodev,size={size},{'U' if podman else 'mode=1777'}"


def _container_name(run_id: str) -> str:
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", run_id)[:64]
    return f"swarm-run-{safe}-{secrets.token_hex(4)}"


def _engine_call(backend: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)` with the engine's errors turned into `SandboxError`."""
    try:
        return call(*args, **kwargs)
    except docker.errors.ImageNotFound as exc:
        raise SandboxError(backend, f"image missing ({exc.explanation}): {BUILD_HINT}") from exc
    except docker.errors.APIError as exc:
        raise SandboxError(backend, f"the engine refused: {exc.explanation or exc}") from exc
    except docker.errors.DockerException as exc:
        raise SandboxError(backend, f"container engine unreachable: {exc}") from exc


async def _stream(attached: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An asyncio stream over the attach socket (a duplicate, so the SDK's object can be closed)."""
    raw = socket.socket(fileno=os.dup(attached.fileno()))
    attached.close()
    raw.setblocking(False)
    return await asyncio.open_connection(sock=raw)


class _Container:
    """A started container: its stdout lines, its exit, and `stop`."""

    def __init__(
        self, backend: str, container: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._backend, self._container, self._writer = backend, container, writer
        self._lines = Lines()
        self._pump = asyncio.create_task(self._lines.pump(stdout_frames(reader)))
        self._exit: asyncio.Future[Exit] | None = None

    def lines(self) -> AsyncIterator[bytes]:
        return self._lines.lines()

    async def wait(self) -> Exit:
        if self._exit is None:
            self._exit = asyncio.ensure_future(self._ended())
        return await asyncio.shield(self._exit)

    async def stop(self, grace: float) -> None:
        """SIGTERM through the container's init, SIGKILL after `grace` (whole seconds, rounded up)."""
        await asyncio.to_thread(_engine_call, self._backend, _stop, self._container, math.ceil(grace))

    def close(self) -> None:
        self._pump.cancel()
        self._writer.close()

    async def _ended(self) -> Exit:
        # The attach stream ends when the container exits, so the engine's wait returns at once.
        await self._lines.ended()
        return await asyncio.to_thread(_engine_call, self._backend, self._result)

    def _result(self) -> Exit:
        state = self._finished_state()
        stderr = self._container.logs(stdout=False, stderr=True, tail=100).decode(errors="replace")
        oom = bool(state.get("OOMKilled")) or _inside.OOM_MARKER in stderr
        return Exit(code=state.get("ExitCode"), stderr=stderr, oom_killed=oom)

    def _finished_state(self) -> dict[str, Any]:
        """The container's state once it has really ended: under load, Podman's wait has been seen to
        return before the process ran, so the state is read back until it says the process exited."""
        for _ in range(_WAIT_ATTEMPTS):
            self._container.wait(timeout=None)
            self._container.reload()
            state: dict[str, Any] = self._container.attrs["State"]
            if not state.get("Running") and state.get("Status") in ("exited", "stopped", "dead"):
                return state
            time.sleep(0.1)
        raise SandboxError(self._backend, f"the container never reported its exit (state {state})")
