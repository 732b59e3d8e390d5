"""A local Podman API service for machines without Docker Engine, and the runner image on it.

    async with podman_service(Path("/run/swarm/podman.sock")) as url:
        await ensure_image(url, RUNNER_IMAGE, Path(".codex-cli"))
        async with ContainerBackend(url) as backend: ...

Podman runs with the runc runtime (crun fails on this cgroup setup, shared/notes/containers.md).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import docker
import docker.errors
import structlog

from executors.sandbox.base import SandboxError

log = structlog.get_logger(__name__)

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "runner" / "build-local.sh"
_BACKEND = "podman"


@asynccontextmanager
async def podman_service(
    socket: Path, *, podman: str = "podman", within: float = 30.0, grace: float = 5.0
) -> AsyncIterator[str]:
    """Run `podman system service` on `socket` and yield its URL once it answers a ping.

    Leaving stops it: SIGTERM, then SIGKILL after `grace` seconds. The service also dies with this
    process (parent-death signal), so a killed executor leaves no orphan behind.
    """
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    url = f"unix://{socket}"
    logfile = socket.with_suffix(".log")
    with logfile.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *_service_command(podman, url),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=socket.parent,  # conmon drops files (an `oom` flag) into its working directory
        )
    try:
        await _until_ready(process, url, logfile, within)
        log.info("podman_service_started", url=url, pid=process.pid)
        yield url
    finally:
        await _terminate(process, grace)
        socket.unlink(missing_ok=True)
        log.info("podman_service_stopped", url=url, returncode=process.returncode)


def _service_command(podman: str, url: str) -> list[str]:
    command = [podman, "--runtime", "runc", "system", "service", "--time=0", url]
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


async def _until_ready(process: asyncio.subprocess.Process, url: str, logfile: Path, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            while not await asyncio.to_thread(_answers, url):
                if process.returncode is not None:
                    raise SandboxError(_BACKEND, f"podman system service exited: {_tail(logfile)}")
                await asyncio.sleep(0.05)
    except TimeoutError as exc:
        raise SandboxError(_BACKEND, f"no answer on {url} within {within} s: {_tail(logfile)}") from exc


def _answers(url: str) -> bool:
    try:
        client = docker.DockerClient(base_url=url, version="1.41", timeout=2)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False
    finally:
        client.close()


async def _terminate(process: asyncio.subprocess.Process, grace: float) -> None:
    if process.returncode is None:
        with suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(grace):
                await process.wait()
        except TimeoutError:
            with suppress(ProcessLookupError):
                process.kill()
    await process.wait()


def _tail(logfile: Path, size: int = 2000) -> str:
    return logfile.read_text(errors="replace")[-size:].strip()


async def ensure_image(url: str, image: str, codex_dir: Path, *, script: Path = BUILD_SCRIPT) -> None:
    """Build `image` with deploy/runner/build-local.sh when the engine at `url` lacks it.

    The script needs the podman CLI on the same storage as the service, and the Codex CLI npm install
    in `codex_dir`. A cold build takes about a minute (deploy/runner/README.md).
    """
    if await asyncio.to_thread(_has_image, url, image):
        return
    log.info("runner_image_building", image=image, script=str(script))
    process = await asyncio.create_subprocess_exec(
        str(script), str(codex_dir), image, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        tail = output.decode(errors="replace")[-2000:]
        raise SandboxError(_BACKEND, f"building {image} failed ({process.returncode}): {tail}")
    if not await asyncio.to_thread(_has_image, url, image):
        raise SandboxError(_BACKEND, f"{script} succeeded but {url} has no {image}")
    log.info("runner_image_built", image=image)


def _has_image(url: str, image: str) -> bool:
    try:
        client = docker.DockerClient(base_url=url, timeout=30)
    except docker.errors.DockerException as exc:
        raise SandboxError(_BACKEND, f"container engine unreachable at {url}: {exc}") from exc
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()
    return True
