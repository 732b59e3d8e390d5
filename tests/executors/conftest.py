"""The sandbox fixtures (a Podman API service, the runner image, the backends) for every executor test."""

from tests.executors.sandbox.conftest import (
    bubblewrap_backend,
    container_backend,
    containers_of,
    podman_url,
    process_backend,
)

__all__ = ["bubblewrap_backend", "container_backend", "containers_of", "podman_url", "process_backend"]
