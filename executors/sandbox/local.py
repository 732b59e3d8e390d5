"""Local backends for machines without a container engine: bubblewrap, or a plain process (unsafe).

Both run `Spec.command` with `codex` meaning the host's pinned Codex binary given to the constructor
(the npm launcher `.bin/codex` or the native binary); `check()`, also done by the first `open`, finds
the tools or raises `SandboxError`. Limits are rlimits set with `prlimit`: memory is RLIMIT_DATA
(allocations fail, nothing is OOM-killed), processes RLIMIT_NPROC, file size RLIMIT_FSIZE;
`Resources.cpus` is not enforced.

Bubblewrap sees only /usr (read-only), a generated /etc/passwd, /etc/group and /etc/hosts, the
linker cache, the Codex binary at /opt/codex, and the run's three directories; it has no network
but the model forwarder. When the executor is root the sandbox runs as uid 1000 (RLIMIT_NPROC does
not apply to root): the run's directories are handed over to it, and every directory above them
must be searchable by that uid (bubblewrap opens them as that user).
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog

from executors.sandbox import _bwrap, _inside
from executors.sandbox._child import Child
from executors.sandbox.base import CODEX_HOME, WORKSPACE, Resources, Sandbox, SandboxError, Spec

log = structlog.get_logger(__name__)


def native_codex(binary: Path) -> Path:
    """The static Codex binary behind `binary`: itself, or the one the npm launcher would start."""
    resolved = binary.resolve()
    if resolved.suffix != ".js":
        return resolved
    node_modules = resolved.parents[3]  # node_modules/@openai/codex/bin/codex.js
    for found in sorted(node_modules.glob("@openai/codex-linux-*/vendor/*/bin/codex")):
        return found
    raise SandboxError("local", f"no native Codex binary next to the launcher {binary}")


class BubblewrapBackend:
    """Each sandbox is a `bwrap` process with every namespace unshared."""

    name = "bubblewrap"

    def __init__(self, codex_binary: Path, *, bwrap: str = "bwrap") -> None:
        self._codex_binary, self._bwrap_name = codex_binary, bwrap
        self._bwrap, self._codex, self._version = "", Path(), ""

    @property
    def version(self) -> str:
        return self._version

    @property
    def safe(self) -> bool:
        return True

    async def check(self) -> None:
        """Find bwrap, socat (under /usr) and Codex, and run a trivial sandbox as the sandbox's user."""
        bwrap = _tool(self.name, self._bwrap_name)
        if not _tool(self.name, "socat").startswith("/usr/"):
            raise SandboxError(self.name, "socat must be installed under /usr (the sandbox sees only /usr)")
        self._codex = native_codex(self._codex_binary)
        version = (await _output_of(self.name, bwrap, "--version")).strip()
        await _output_of(
            self.name, bwrap, "--unshare-all", *_bwrap.system_mounts(), "--", "true", **_as_agent()
        )
        self._bwrap, self._version = bwrap, version

    async def discard(self, run_id: str) -> None:
        """Nothing to do: bwrap dies with its parent (`--die-with-parent`), so a lost run left nothing."""

    @asynccontextmanager
    async def open(self, spec: Spec) -> AsyncIterator[Sandbox]:
        """Start bwrap; leaving kills whatever still runs (the sandbox's PID 1 takes the rest along)."""
        if not self._bwrap:
            await self.check()
        await self._prepare(spec)
        process, info = await self._spawn(spec)
        pid: int | None = None  # the sandbox's PID 1 on the host, which takes SIGTERM
        child = Child(process, lambda signum: os.kill(pid or process.pid, signum), group=False)
        try:
            pid = await _bwrap.sandbox_pid(info)
            log.info("bubblewrap_started", run_id=spec.run_id, pid=process.pid, sandbox_pid=pid)
            yield child
        finally:
            await child.close()

    async def _spawn(self, spec: Spec) -> tuple[asyncio.subprocess.Process, int]:
        """Start bwrap; return it and the read end of its `--info-fd` pipe."""
        files, (info, info_writer) = _bwrap.Files(_bwrap.etc_files()), os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv(spec, files, info_writer),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(*files.fds, info_writer),
                start_new_session=True,
                env=self._env(spec),  # not --setenv: argv is world-readable, a process's environ is not
                **_as_agent(),
            )
        except BaseException:
            os.close(info)
            raise
        finally:
            files.close()
            os.close(info_writer)
        return process, info

    async def _prepare(self, spec: Spec) -> None:
        if (problem := _inside.check_socket(spec)) is not None:
            raise SandboxError(self.name, problem)
        await asyncio.to_thread(_inside.hand_over, spec)
        if os.geteuid() == 0:
            for directory in (spec.workspace, spec.codex_home, spec.model_socket.parent, self._codex.parent):
                _reachable_by_agent(self.name, directory)

    def _argv(self, spec: Spec, files: _bwrap.Files, info_fd: int) -> list[str]:
        return [
            self._bwrap,
            *("--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1"),
            *("--cap-drop", "ALL", "--hostname", "sandbox"),
            *_bwrap.system_mounts(),
            *files.mounts(),
            *("--proc", "/proc", "--dev", "/dev"),
            *_bwrap.tmpfs_mounts(spec.resources.tmpfs_bytes),
            *_bwrap.codex_mounts(self._codex),
            *("--bind", str(spec.workspace), WORKSPACE, "--bind", str(spec.codex_home), CODEX_HOME),
            *("--ro-bind", str(spec.model_socket.parent), _inside.MODEL_DIR, "--remount-ro", "/"),
            *("--chdir", WORKSPACE, "--info-fd", str(info_fd), "--"),
            *_prlimit(spec.resources),
            *_inside.entry_command(spec),
        ]

    def _env(self, spec: Spec) -> dict[str, str]:
        return {"PATH": _bwrap.PATH, "HOME": _inside.HOME, **spec.env, "CODEX_HOME": CODEX_HOME}


class ProcessBackend:
    """No isolation: the command runs as a plain child process with rlimits. Only for development.

    The model socket is not forwarded: Codex must reach the model at a TCP address on the host (the
    model proxy's loopback listener); `Spec.model_socket` and `model_port` are unused. Every run logs
    a `sandbox_unsafe` warning. Runs as the executor's user; as root RLIMIT_NPROC does not apply.
    """

    name = "process"

    def __init__(self, codex_binary: Path) -> None:
        self._codex_binary, self._codex = codex_binary, Path()

    @property
    def version(self) -> str:
        return f"process {platform.system()} {platform.release()}"

    @property
    def safe(self) -> bool:
        return False

    async def check(self) -> None:
        """Find prlimit and Codex."""
        _tool(self.name, "prlimit")
        self._codex = native_codex(self._codex_binary)

    async def discard(self, run_id: str) -> None:
        """Nothing to do: a sandbox of a lost executor was its child and is gone or unknown here."""

    @asynccontextmanager
    async def open(self, spec: Spec) -> AsyncIterator[Sandbox]:
        """Start the command in the workspace, in its own process group; leaving kills the group."""
        log.warning("sandbox_unsafe", backend=self.name, run_id=spec.run_id, isolation="none")
        if self._codex == Path():
            await self.check()
        with tempfile.TemporaryDirectory(prefix="swarm-home-", ignore_cleanup_errors=True) as home:
            process = await asyncio.create_subprocess_exec(
                *_prlimit(spec.resources),
                *self._command(spec),
                cwd=spec.workspace,
                env=self._env(spec, home),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            child = Child(process, lambda signum: os.killpg(process.pid, signum), group=True)
            try:
                yield child
            finally:
                await child.close()

    def _command(self, spec: Spec) -> list[str]:
        first, *rest = spec.command
        return [str(self._codex) if first == "codex" else first, *rest]

    def _env(self, spec: Spec, home: str) -> dict[str, str]:
        path = f"{self._codex.parent}:/usr/local/bin:/usr/bin:/bin"
        return {"PATH": path, "HOME": home, **spec.env, "CODEX_HOME": str(spec.codex_home)}


def _reachable_by_agent(backend: str, directory: Path) -> None:
    blocked = _inside.unsearchable(directory.resolve(), _inside.AGENT_UID, _inside.AGENT_GID)
    if blocked is not None:
        detail = f"uid {_inside.AGENT_UID} cannot enter {blocked} (on the way to {directory}): make it o+x"
        raise SandboxError(backend, detail)


def _prlimit(limits: Resources) -> list[str]:
    return [
        "prlimit",
        f"--nproc={limits.pids}",
        f"--data={limits.memory_bytes}",
        f"--fsize={limits.file_size_bytes}",
        "--nofile=1024",
        "--core=0",
        "--",
    ]


def _as_agent() -> dict[str, Any]:
    """`create_subprocess_exec` arguments that drop root to the agent user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": _inside.AGENT_UID, "group": _inside.AGENT_GID, "extra_groups": []}


def _tool(backend: str, name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SandboxError(backend, f"{name} is not installed (apt-get install bubblewrap socat util-linux)")
    return found


async def _output_of(backend: str, *argv: str, **options: Any) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={}, **options
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise SandboxError(backend, f"{' '.join(argv[:2])} failed: {stderr.decode(errors='replace').strip()}")
    return stdout.decode()
