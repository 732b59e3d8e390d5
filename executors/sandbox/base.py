"""The sandbox interface: where one run's Codex process lives, whatever engine provides it.

A backend starts a `Sandbox` from a `Spec`; the sandbox streams the process's stdout lines as they
arrive, can be stopped (a graceful signal, then a kill after the grace period) and is always removed
when its context ends. Inside every sandbox:

    /workspace          the run's workspace (read-write), also the working directory
    /codex-home         CODEX_HOME (read-write)
    127.0.0.1:<port>    the model proxy: a TCP forwarder to the host's unix socket `model_socket`

and nothing else of the host is reachable: no network, no other host files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

WORKSPACE = "/workspace"
CODEX_HOME = "/codex-home"
MODEL_PORT = 8399  # the forwarder's port inside the sandbox


class SandboxError(Exception):
    """The sandbox could not be created or run (engine down, image missing, start refused)."""

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"{backend}: {detail}")
        self.backend = backend
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Resources:
    memory_bytes: int = 1024 * 1024 * 1024
    cpus: float = 1.0
    pids: int = 256
    file_size_bytes: int = 1024 * 1024 * 1024  # largest single file the process may write
    tmpfs_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Spec:
    """What to run: `command` is the argv inside the sandbox (the `codex exec ...` line)."""

    run_id: str
    command: tuple[str, ...]
    workspace: Path
    codex_home: Path
    model_socket: Path
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = Resources()
    model_port: int = MODEL_PORT


@dataclass(frozen=True, slots=True)
class Exit:
    """How the process ended: its exit code (`None` when it was killed without one) and stderr's tail."""

    code: int | None
    stderr: str = ""
    oom_killed: bool = False


class Sandbox(Protocol):
    def lines(self) -> AsyncIterator[bytes]:
        """The process's stdout, one line at a time (without the newline), as it is written."""
        ...

    async def wait(self) -> Exit:
        """Wait for the process to end."""
        ...

    async def stop(self, grace: float) -> None:
        """A graceful signal, then a kill if it is still alive after `grace` seconds. Idempotent."""
        ...


class Backend(Protocol):
    name: str  # "container", "bubblewrap", "process"

    @property
    def version(self) -> str: ...

    @property
    def safe(self) -> bool:
        """False for a backend that does not isolate the run from the host."""
        ...

    async def discard(self, run_id: str) -> None:
        """Remove whatever an executor that was lost left of this run's sandbox."""
        ...

    def open(self, spec: Spec) -> AbstractAsyncContextManager[Sandbox]:
        """Start the sandbox; leaving the context stops and removes it, whatever happened."""
        ...
