"""The embedded nats-server: a JetStream-enabled child process with its data in one directory."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import structlog
from nats.errors import Error as NatsError

from bus.errors import ServerBinaryMissing, ServerError
from bus.settings import ServerSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RunningServer:
    url: str
    port: int
    pid: int
    store_dir: Path
    log_file: Path


def find_binary(configured: str | None) -> str:
    """The nats-server to run: the configured one (which must exist), else on PATH or beside this Python."""
    if configured:
        if Path(configured).is_file() and os.access(configured, os.X_OK):
            return configured
        raise ServerBinaryMissing([configured])
    candidates = [shutil.which("nats-server") or "", str(Path(sys.executable).parent / "nats-server")]
    for candidate in filter(None, candidates):
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServerBinaryMissing([c or "PATH" for c in candidates])


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Ask Linux to stop the server if this process dies without cleaning up (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _config(settings: ServerSettings, port: int, store_dir: Path) -> str:
    limit = f"  max_file_store: {settings.max_file_store}\n" if settings.max_file_store else ""
    return (
        f'server_name: "swarm-embedded"\nlisten: "{settings.host}:{port}"\n'
        f'jetstream {{\n  store_dir: "{store_dir}"\n{limit}}}\n'
    )


@contextlib.asynccontextmanager
async def embedded(settings: ServerSettings, data_dir: Path) -> AsyncIterator[RunningServer]:
    """Start nats-server on `data_dir`, wait until JetStream answers, stop it cleanly on exit."""
    binary = find_binary(settings.binary)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = settings.port or free_port(settings.host)
    store_dir, log_file, conf = data_dir / "jetstream", data_dir / "nats-server.log", data_dir / "nats.conf"
    conf.write_text(_config(settings, port, store_dir))
    with log_file.open("ab") as sink:
        process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(conf),
            stdout=sink,
            stderr=sink,
            start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop the server in order
            preexec_fn=_die_with_parent,
        )
    server = RunningServer(
        url=f"nats://{settings.host}:{port}",
        port=port,
        pid=process.pid,
        store_dir=store_dir,
        log_file=log_file,
    )
    try:
        await _wait_ready(server, process, settings.start_timeout)
        log.info("nats_server_started", url=server.url, pid=server.pid, store_dir=str(store_dir))
        yield server
    finally:
        await _stop(process)
        log.info("nats_server_stopped", pid=server.pid, returncode=process.returncode)


async def _wait_ready(server: RunningServer, process: asyncio.subprocess.Process, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            while not await _jetstream_answers(server.url):
                if process.returncode is not None:
                    raise ServerError(f"nats-server exited with {process.returncode}: {_tail(server)}")
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise ServerError(f"nats-server did not get ready within {within}s: {_tail(server)}") from None


async def _ignore(_: Exception) -> None:
    """Connection errors while the server starts are expected; `_wait_ready` reports the real one."""


async def _jetstream_answers(url: str) -> bool:
    try:
        # nats-py treats max_reconnect_attempts=0 as "retry forever, 2 s apart": 1 with no wait is
        # the least it allows, so a server that is not up yet (or exited) is seen in milliseconds.
        client = await nats.connect(
            url,
            allow_reconnect=False,
            connect_timeout=0.5,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=_ignore,
        )
    except (OSError, NatsError, TimeoutError):
        return False
    try:
        await client.jetstream().account_info()
    except (NatsError, TimeoutError):
        return False
    else:
        return True
    finally:
        await client.close()


async def _stop(process: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


def _tail(server: RunningServer, lines: int = 5) -> str:
    try:
        text = server.log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
