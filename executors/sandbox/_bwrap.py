"""What a bubblewrap sandbox is made of: its system mounts, generated /etc files, the Codex
directory, and how to learn the host pid of its PID 1."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

from executors.sandbox import _inside

CODEX_DIR = "/opt/codex"
PATH = f"{CODEX_DIR}/bin:{CODEX_DIR}/codex-path:/usr/local/bin:/usr/bin:/bin"
_INFO_WITHIN = 10.0  # bwrap writes the info as soon as the namespaces exist


class Files:
    """Small generated files, handed to bwrap through pipes (`--ro-bind-data FD PATH`)."""

    def __init__(self, contents: Mapping[str, str]) -> None:
        self._fds: dict[str, int] = {}
        for path, text in contents.items():
            read, write = os.pipe()
            os.write(write, text.encode())  # a few hundred bytes: far below the pipe's capacity
            os.close(write)
            self._fds[path] = read

    @property
    def fds(self) -> tuple[int, ...]:
        return tuple(self._fds.values())

    def mounts(self) -> list[str]:
        mounts = ["--perms", "0755", "--dir", "/etc"]
        for path in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime"):
            mounts += ["--ro-bind-try", path, path]
        for path, fd in self._fds.items():
            mounts += ["--perms", "0644", "--ro-bind-data", str(fd), path]
        return mounts

    def close(self) -> None:
        for fd in self._fds.values():
            with suppress(OSError):
                os.close(fd)


def etc_files() -> dict[str, str]:
    uid, gid = (_inside.AGENT_UID, _inside.AGENT_GID) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    return {
        "/etc/passwd": (
            f"root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:{uid}:{gid}:agent:{_inside.HOME}:/bin/bash\n"
        ),
        "/etc/group": f"root:x:0:\nagent:x:{gid}:\n",
        "/etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
    }


def tmpfs_mounts(size: int) -> list[str]:
    """The temp and home directories: tmpfs of `size` bytes each (the root is read-only)."""
    limit = ["--size", str(size)]
    return [*limit, "--perms", "1777", "--tmpfs", _inside.TMP, *limit, "--tmpfs", _inside.HOME]


def system_mounts() -> list[str]:
    mounts = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/", name)
        if path.is_symlink():
            mounts += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            mounts += ["--ro-bind", str(path), str(path)]
    return mounts


def codex_mounts(codex: Path) -> list[str]:
    """The npm vendor directory (binary, bundled bwrap and rg) at /opt/codex, else the binary alone."""
    vendor = codex.parent.parent
    if (vendor / "codex-package.json").is_file():
        return ["--ro-bind", str(vendor), CODEX_DIR]
    return ["--ro-bind", str(codex), f"{CODEX_DIR}/bin/codex"]


async def sandbox_pid(fd: int) -> int | None:
    """The host pid of the sandbox's PID 1 from bwrap's `--info-fd` (None when bwrap failed first)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        async with asyncio.timeout(_INFO_WITHIN):
            data = await reader.read()
    finally:
        transport.close()
    return int(json.loads(data)["child-pid"]) if data else None
