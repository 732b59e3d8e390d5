"""Sandboxes for Codex runs: one interface (`Backend`, `Sandbox`, `Spec`), three backends.

`ContainerBackend` (Docker Engine API: Docker or Podman), `BubblewrapBackend` (no engine, Linux
namespaces) and `ProcessBackend` (no isolation, development only). `podman_service` and `ensure_image`
provide an engine and the runner image on a machine that has only Podman.

Errors: every failure to create or run a sandbox is a `SandboxError(backend, detail)`.
"""

from executors.sandbox.base import (
    CODEX_HOME,
    MODEL_PORT,
    WORKSPACE,
    Backend,
    Exit,
    Resources,
    Sandbox,
    SandboxError,
    Spec,
)
from executors.sandbox.container import RUN_LABEL, ContainerBackend
from executors.sandbox.local import BubblewrapBackend, ProcessBackend, native_codex
from executors.sandbox.podman import ensure_image, podman_service
from executors.settings import RUNNER_IMAGE

__all__ = [
    "CODEX_HOME",
    "MODEL_PORT",
    "RUNNER_IMAGE",
    "RUN_LABEL",
    "WORKSPACE",
    "Backend",
    "BubblewrapBackend",
    "ContainerBackend",
    "Exit",
    "ProcessBackend",
    "Resources",
    "Sandbox",
    "SandboxError",
    "Spec",
    "ensure_image",
    "native_codex",
    "podman_service",
]
