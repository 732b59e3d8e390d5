"""Running `swarm` in subprocesses: the `up` process and one-shot commands."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SWARM = (sys.executable, "-m", "swarm.cli")


@dataclass(frozen=True)
class Terminal:
    returncode: int
    output: str


def in_a_terminal(argv: list[str], env: dict[str, str], within: float = 60.0) -> Terminal:
    """Run a command with a pseudo-terminal as its stdin, stdout and stderr; return all it printed."""
    main, child = pty.openpty()
    process = subprocess.Popen(
        argv, stdin=child, stdout=child, stderr=child, env={**os.environ, **env}, close_fds=True
    )
    os.close(child)
    chunks = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    return Terminal(returncode, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n"))


def swarm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


class Up:
    """A `swarm up` child process and the ready line it printed."""

    def __init__(self, process: asyncio.subprocess.Process, ready: dict[str, object]) -> None:
        self.process = process
        self.ready = ready

    @property
    def url(self) -> str:
        return str(self.ready["nats_url"])


async def start_up(data_dir: Path, *extra: str) -> Up:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "swarm.cli", "up", "--data-dir", str(data_dir), "--port", "0",
        "--api-port", "0", "--json", *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(30):
        line = await process.stdout.readline()
    ready = json.loads(line)
    assert ready["event"] == "ready"
    return Up(process, ready)


async def interrupt(up: Up) -> int:
    up.process.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        return await up.process.wait()


def server_pids(data_dir: Path) -> list[int]:
    """nats-server processes started on this data directory (found through their command line)."""
    return _pids("nats-server", data_dir)


def podman_pids(data_dir: Path) -> list[int]:
    """Podman API services `swarm up` started for this data directory."""
    return _pids("podman", data_dir)


def _pids(program: str, data_dir: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if program in cmdline and str(data_dir) in cmdline:
                pids.append(int(proc.name))
    return pids
