"""A run's workspace: prepared before the agent starts, measured after it ends.

Preparation is the setup phase, on the executor's side of the sandbox: copy the project's directory
(never following a symlink out of it), clone its git repository, or unpack an earlier run's
workspace archive. The copy then gets its own git repository with one baseline commit, so the final
diff is exactly what the run changed, whatever state the source was in.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from schemas import GitSource, LocalSource

_GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "/bin/false",
    "SSH_ASKPASS": "/bin/false",
    "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
}
_GIT_CONFIG = (
    "-c", "safe.directory=*",
    "-c", "user.name=codex-swarm",
    "-c", "user.email=runs@codex-swarm.invalid",
    "-c", "commit.gpgsign=false",
    "-c", "protocol.ext.allow=never",
    "-c", "core.hooksPath=/dev/null",
)  # fmt: skip
BASELINE_MESSAGE = "codex-swarm baseline"


class WorkspaceError(Exception):
    """The workspace could not be prepared: `detail` says why and is safe to show the user."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Prepared:
    source: str  # "local", "git" or "run"
    baseline_commit: str
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Changes:
    diff: bytes
    files: list[str]  # paths changed since the baseline, sorted


async def git(cwd: Path, *args: str, seconds: float = 120.0) -> bytes:
    """Run git with a sealed configuration (no hooks, no prompts, no user config); stdout on success."""
    process = await asyncio.create_subprocess_exec(
        "git", *_GIT_CONFIG, *args,
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), **_GIT_ENV},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(seconds):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise WorkspaceError(f"git {args[0]} took longer than {seconds:.0f} s") from None
    if process.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        raise WorkspaceError(f"git {args[0]} failed: {message[-1] if message else process.returncode}")
    return out


async def from_local(source: LocalSource, dest: Path) -> Prepared:
    root = Path(source.path)
    if not root.is_dir():
        raise WorkspaceError(f"the project directory {source.path} does not exist on this executor")
    await asyncio.to_thread(copy_tree, root, dest)
    return await _baseline(dest, "local")


async def from_git(source: GitSource, dest: Path, seconds: float = 300.0) -> Prepared:
    with tempfile.TemporaryDirectory(prefix="swarm-clone-") as scratch:
        clone = Path(scratch) / "clone"
        await git(
            Path(scratch), "clone", "--quiet", "--no-checkout", "--", source.url, str(clone), seconds=seconds
        )
        await git(clone, "checkout", "--quiet", "--detach", source.ref, seconds=seconds)
        await asyncio.to_thread(copy_tree, clone, dest)
    return await _baseline(dest, "git")


async def from_archive(archive: bytes, dest: Path) -> Prepared:
    """An earlier run's workspace, from the archive `archive_of` made of it."""
    await asyncio.to_thread(_unpack, archive, dest)
    return await _baseline(dest, "run")


def copy_tree(source: Path, dest: Path) -> None:
    """Copy `source` into `dest` without its `.git`; a symlink is kept only if it stays inside."""
    root = source.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    for directory, subdirs, files in os.walk(root, followlinks=False):
        here = Path(directory)
        target = dest / here.relative_to(root)
        subdirs[:] = [name for name in subdirs if name != ".git" or here != root]
        for name in subdirs:
            _copy_entry(root, here / name, target / name)
        for name in files:
            _copy_entry(root, here / name, target / name)


def _copy_entry(root: Path, path: Path, target: Path) -> None:
    if path.is_symlink():
        resolved = path.resolve()
        if resolved.is_relative_to(root) and resolved != root:
            target.symlink_to(os.readlink(path))
    elif path.is_dir():
        target.mkdir(exist_ok=True)
    elif path.is_file():
        shutil.copy2(path, target, follow_symlinks=False)


async def _baseline(dest: Path, source: str) -> Prepared:
    shutil.rmtree(dest / ".git", ignore_errors=True)
    await git(dest, "init", "--quiet", "--initial-branch=main")
    await git(dest, "add", "--all")
    await git(dest, "commit", "--quiet", "--allow-empty", "--no-verify", "-m", BASELINE_MESSAGE)
    commit = (await git(dest, "rev-parse", "HEAD")).decode().strip()
    files, size = await asyncio.to_thread(_measure, dest)
    return Prepared(source=source, baseline_commit=commit, files=files, bytes=size)


async def changes(workspace: Path, baseline: str) -> Changes:
    """What the run changed since `baseline`, new files included (the index is updated to see them)."""
    await git(workspace, "add", "--all")
    diff = await git(workspace, "diff", "--cached", "--binary", "--no-color", baseline)
    names = await git(workspace, "diff", "--cached", "--name-only", "-z", baseline)
    return Changes(diff=diff, files=sorted(name for name in names.decode().split("\0") if name))


def file_list(workspace: Path) -> str:
    """Every file of the workspace (without `.git`) as `size<TAB>path` lines, sorted by path."""
    lines = [f"{path.lstat().st_size}\t{path.relative_to(workspace)}" for path in _files(workspace)]
    return "".join(f"{line}\n" for line in sorted(lines, key=lambda line: line.split("\t", 1)[1]))


def archive_of(workspace: Path) -> bytes:
    """The workspace (without `.git`) as a gzipped tar, for a later run's `from_run_id`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(_files(workspace)):
            tar.add(path, arcname=str(path.relative_to(workspace)), recursive=False)
    return buffer.getvalue()


def _unpack(archive: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")  # refuses absolute paths, `..` and links leaving dest
    except (tarfile.TarError, OSError) as exc:
        raise WorkspaceError(f"the earlier run's workspace archive cannot be unpacked: {exc}") from exc


def _files(workspace: Path) -> list[Path]:
    found: list[Path] = []
    for directory, subdirs, files in os.walk(workspace, followlinks=False):
        here = Path(directory)
        subdirs[:] = [name for name in subdirs if name != ".git" or here != workspace]
        found.extend(here / name for name in files)
    return found


def _measure(workspace: Path) -> tuple[int, int]:
    files = _files(workspace)
    return len(files), sum(path.lstat().st_size for path in files)
