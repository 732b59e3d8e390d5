"""What only the container backend and the Podman service promise: clean failures and no leftovers."""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from executors.sandbox import ContainerBackend, SandboxError, podman_service
from tests.executors.sandbox.conftest import RunDir

pytestmark = pytest.mark.asyncio(loop_scope="session")

EMPTY_IMAGE = "localhost/swarm-sandbox-empty"


def _empty_rootfs() -> bytes:
    """A root file system whose /tmp is a file: the runtime cannot mount a tmpfs there, so start fails."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("tmp"), io.BytesIO(b""))
    return buffer.getvalue()


@pytest.fixture(scope="session")
def empty_image(podman_url: str) -> Iterator[str]:
    client = docker.DockerClient(base_url=podman_url)
    client.api.import_image_from_data(_empty_rootfs(), repository=EMPTY_IMAGE)
    try:
        yield f"{EMPTY_IMAGE}:latest"
    finally:
        with contextlib.suppress(docker.errors.NotFound):  # another test session may share the engine
            client.images.remove(f"{EMPTY_IMAGE}:latest", force=True)
        client.close()


async def test_a_failed_start_raises_and_leaves_no_container(
    podman_url: str, empty_image: str, model: RunDir
) -> None:
    """A container the engine cannot start raises `SandboxError` and is removed, not left `Created`."""
    backend = ContainerBackend(podman_url, empty_image)
    run_id = f"test-{uuid.uuid4().hex[:12]}"
    with pytest.raises(SandboxError, match="the engine refused"):
        async with backend.open(model.spec(run_id, "true")):
            pytest.fail("the sandbox started")
    assert await backend.containers(run_id) == []


async def test_a_missing_image_says_how_to_build_it(podman_url: str) -> None:
    """Checking a backend whose image is missing names the build script."""
    backend = ContainerBackend(podman_url, "localhost/swarm-no-such-image:1")
    with pytest.raises(SandboxError, match=r"build-local\.sh"):
        await backend.check()


async def test_an_unreachable_engine_is_a_sandbox_error(tmp_path: Path) -> None:
    """An engine URL nobody answers on raises `SandboxError` saying the engine is unreachable."""
    backend = ContainerBackend(f"unix://{tmp_path}/nobody.sock")
    with pytest.raises(SandboxError, match="unreachable"):
        await backend.check()


async def test_the_podman_service_answers_and_leaves_nothing_behind(podman_url: str, tmp_path: Path) -> None:
    """`podman_service` yields a URL that answers a ping; afterwards its process and socket are gone."""
    socket = tmp_path / "service.sock"
    async with podman_service(socket) as url:
        client = docker.DockerClient(base_url=url)
        assert client.ping()
        client.close()
    assert not socket.exists()
    assert not [pid for pid in Path("/proc").iterdir() if _cmdline_has(pid, str(socket))]


def _cmdline_has(entry: Path, text: str) -> bool:
    try:
        return entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes()
    except OSError:
        return False
