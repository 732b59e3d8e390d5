"""A run's workspace is a contained copy with a baseline, so its diff is exactly the run's change."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from executors import workspace
from schemas import GitSource, LocalSource


def _project(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / "README.md").write_text("# demo\n")
    (root / ".gitignore").write_text("build/\n")
    return root


async def test_local_copy_keeps_files_and_drops_links_out(tmp_path: Path) -> None:
    """Symlinks inside the project are kept; one pointing outside is not followed or copied."""
    project = _project(tmp_path / "project")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    (project / "leak").symlink_to(secret)
    (project / "alias.py").symlink_to("src/app.py")
    (project / ".git").mkdir()
    (project / ".git" / "config").write_text("[core]\n")
    dest = tmp_path / "ws"
    prepared = await workspace.from_local(LocalSource(path=str(project)), dest)
    assert (dest / "src" / "app.py").read_text() == "print('hi')\n"
    assert not (dest / "leak").exists()
    assert not (dest / "leak").is_symlink()
    assert (dest / "alias.py").is_symlink()
    assert (dest / "alias.py").read_text() == "print('hi')\n"
    assert prepared.source == "local"
    assert len(prepared.baseline_commit) == 40
    assert prepared.files == 4  # app.py, README.md, .gitignore, alias.py


async def test_changes_are_exactly_the_runs(tmp_path: Path) -> None:
    """After edits, additions and deletions, the diff and file list show those and nothing else."""
    dest = tmp_path / "ws"
    prepared = await workspace.from_local(LocalSource(path=str(_project(tmp_path / "p"))), dest)
    (dest / "src" / "app.py").write_text("print('hello')\n")
    (dest / "new.txt").write_text("new\n")
    (dest / "README.md").unlink()
    (dest / "build").mkdir()
    (dest / "build" / "out.o").write_text("ignored")
    changes = await workspace.changes(dest, prepared.baseline_commit)
    assert changes.files == ["README.md", "new.txt", "src/app.py"]
    diff = changes.diff.decode()
    assert "+print('hello')" in diff
    assert "+new" in diff
    assert "-# demo" in diff
    assert "out.o" not in diff


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    """A project directory that is not there is an error the user can read."""
    with pytest.raises(workspace.WorkspaceError, match="does not exist"):
        await workspace.from_local(LocalSource(path=str(tmp_path / "nope")), tmp_path / "ws")


async def test_git_source_is_cloned_at_its_ref(tmp_path: Path) -> None:
    """A git URL is cloned in the setup phase at the requested ref; the workspace gets its own baseline."""
    repo = _project(tmp_path / "repo")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "one"], ["tag", "v1"]):
        await workspace.git(repo, *args)
    (repo / "later.txt").write_text("after the tag\n")
    await workspace.git(repo, "add", "-A")
    await workspace.git(repo, "commit", "-qm", "two")
    dest = tmp_path / "ws"
    prepared = await workspace.from_git(GitSource(url=f"file://{repo}", ref="v1"), dest)
    assert prepared.source == "git"
    assert (dest / "src" / "app.py").exists()
    assert not (dest / "later.txt").exists()
    with pytest.raises(workspace.WorkspaceError, match="git clone failed"):
        await workspace.from_git(GitSource(url=f"file://{tmp_path}/missing"), tmp_path / "ws2")


async def test_archive_round_trip_and_escape_refused(tmp_path: Path) -> None:
    """An earlier run's archive unpacks to the same files; an archive reaching outside is refused."""
    source = tmp_path / "ws"
    await workspace.from_local(LocalSource(path=str(_project(tmp_path / "p"))), source)
    archive = workspace.archive_of(source)
    copy = tmp_path / "copy"
    prepared = await workspace.from_archive(archive, copy)
    assert prepared.source == "run"
    assert (copy / "src" / "app.py").read_text() == "print('hi')\n"
    assert workspace.file_list(copy) == workspace.file_list(source)

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(workspace.WorkspaceError, match="cannot be unpacked"):
        await workspace.from_archive(evil.getvalue(), tmp_path / "evil")
    assert not (tmp_path / "escaped.txt").exists()
