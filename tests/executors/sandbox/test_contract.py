"""The sandbox contract, against the container, bubblewrap and process backends: live output, exits,
stop, the environment, and what a run can reach (only its workspace and the model port)."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from pathlib import Path

import pytest
import structlog.testing

from executors.sandbox import MODEL_PORT, Backend, Resources
from tests.bus._waits import eventually
from tests.executors.sandbox.conftest import (
    MODEL_ANSWER,
    SMALL,
    RunDir,
    containers_of,
    only,
    run_to_end,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

# What a backend may add to `Spec.env`: the basics, and what the shell and the engine set.
BASICS = {"PATH", "HOME", "CODEX_HOME", "PWD", "SHLVL", "_", "HOSTNAME", "TERM", "container"}
CONNECT = 'timeout 3 bash -c "exec 3<>/dev/tcp/$0" 2>/dev/null && echo "open $0" || echo "closed $0"'
ASK_MODEL = (
    'exec 3<>/dev/tcp/127.0.0.1/"$0" && printf "GET /probe HTTP/1.0\\r\\nHost: m\\r\\n\\r\\n" >&3 && cat <&3'
)


def _run_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _sleep_marker() -> str:
    """A `sleep` duration no other process on the host has in its command line."""
    return f"60.{random.randrange(10**6):06d}"


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def _none_left(marker: str) -> None:
    async def gone() -> bool:
        return not _processes_with(marker)

    await eventually(gone, within=10)


async def test_lines_arrive_while_the_process_runs(backend: Backend, model: RunDir) -> None:
    """The first line reaches `lines()` before the process ends: it waits for the test to read it."""
    script = "echo first; while [ ! -e go ]; do sleep 0.02; done; echo second"
    async with asyncio.timeout(30), backend.open(model.spec(_run_id(), "sh", "-c", script)) as sandbox:
        lines = aiter(sandbox.lines())
        assert await anext(lines) == b"first"
        (model.workspace / "go").touch()
        assert await anext(lines) == b"second"
        assert (await sandbox.wait()).code == 0


@pytest.mark.parametrize("code", [0, 7])
async def test_exit_code_and_stderr_are_the_commands(backend: Backend, model: RunDir, code: int) -> None:
    """`wait()` reports the command's own exit status and the tail of its stderr."""
    spec = model.spec(_run_id(), "sh", "-c", f"echo to-stderr >&2; exit {code}")
    lines, exit_ = await run_to_end(backend, spec)
    assert (lines, exit_.code, exit_.oom_killed) == ([], code, False)
    assert "to-stderr" in exit_.stderr


async def test_stop_ends_a_sleep_by_sigterm_and_nothing_remains(backend: Backend, model: RunDir) -> None:
    """`stop()` ends `sleep 60` by SIGTERM well within the grace; no process or container is left."""
    run_id, marker = _run_id(), _sleep_marker()
    spec = model.spec(run_id, "sh", "-c", f"echo ready; exec sleep {marker}")
    async with asyncio.timeout(30), backend.open(spec) as sandbox:
        assert await anext(aiter(sandbox.lines())) == b"ready"
        started = time.monotonic()
        await sandbox.stop(grace=10)
        assert time.monotonic() - started < 5
        assert (await sandbox.wait()).code == 143
    assert await containers_of(backend, run_id) == []
    await _none_left(marker)


async def test_stop_kills_what_ignores_sigterm_after_the_grace(backend: Backend, model: RunDir) -> None:
    """A process that ignores SIGTERM is killed once the grace has passed, not before."""
    run_id, marker = _run_id(), _sleep_marker()
    spec = model.spec(run_id, "sh", "-c", f"trap '' TERM; echo ready; sleep {marker}; echo survived")
    async with asyncio.timeout(30), backend.open(spec) as sandbox:
        lines = aiter(sandbox.lines())
        assert await anext(lines) == b"ready"
        started = time.monotonic()
        await sandbox.stop(grace=1.0)
        assert 0.9 <= time.monotonic() - started < 6
        assert [line async for line in lines] == []
        assert (await sandbox.wait()).code == 137
    assert await containers_of(backend, run_id) == []
    await _none_left(marker)


async def test_environment_is_the_specs_alone(
    backend: Backend, model: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command sees `Spec.env` plus the basics; a secret in the executor's environment is absent."""
    monkeypatch.setenv("SWARM_SANDBOX_SECRET", "host-secret-value")
    spec = model.spec(_run_id(), "env", env={"SWARM_VISIBLE": "yes"})
    lines, exit_ = await run_to_end(backend, spec)
    variables = dict(line.split("=", 1) for line in lines)
    assert exit_.code == 0
    assert variables["SWARM_VISIBLE"] == "yes"
    assert "CODEX_HOME" in variables
    assert "host-secret-value" not in "\n".join(lines)
    assert set(variables) <= BASICS | {"SWARM_VISIBLE"}


async def test_host_files_outside_the_run_are_unreadable(
    backend: Backend, model: RunDir, tmp_path: Path
) -> None:
    """World-readable host files beside the workspace or in the test's tmp dir are unreadable."""
    only(backend, "container", "bubblewrap")
    secrets = [model.root / "secret.txt", tmp_path / "secret.txt"]
    for secret in secrets:
        secret.write_text("top-secret\n")
        secret.chmod(0o644)
    paths = [*map(str, secrets), "/etc/shadow", "/root/.bashrc"]
    script = 'for f in "$@"; do cat "$f" 2>/dev/null && echo "read $f" || echo "denied $f"; done'
    lines, _ = await run_to_end(backend, model.spec(_run_id(), "sh", "-c", script, "sh", *paths))
    assert lines == [f"denied {path}" for path in paths]


async def test_only_the_model_port_is_reachable(backend: Backend, model: RunDir) -> None:
    """External addresses and host loopback services are unreachable; 127.0.0.1:model_port is the model."""
    only(backend, "container", "bubblewrap")
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    host_port = server.sockets[0].getsockname()[1]
    targets = ["10.255.255.1/80", "1.1.1.1/53", f"127.0.0.1/{host_port}"]
    script = " ; ".join(
        [*(f"sh -c '{CONNECT}' {target}" for target in targets), f"bash -c '{ASK_MODEL}' {MODEL_PORT}"]
    )
    async with server:
        lines, _ = await run_to_end(backend, model.spec(_run_id(), "bash", "-c", script))
    assert lines[: len(targets)] == [f"closed {target}" for target in targets]
    assert lines[len(targets)].startswith("HTTP/1.0 200")
    assert lines[-1] == MODEL_ANSWER


async def test_writes_outside_the_workspace_fail(backend: Backend, model: RunDir) -> None:
    """/, /etc, /usr and the Codex directory are read-only; the host's are untouched."""
    only(backend, "container", "bubblewrap")
    places = ["/", "/etc", "/usr", "/opt/codex"]
    script = (
        'for d in "$@"; do touch "$d/swarm-probe" 2>/dev/null && echo "wrote $d" || echo "denied $d"; done'
    )
    lines, _ = await run_to_end(backend, model.spec(_run_id(), "sh", "-c", script, "sh", *places))
    assert lines == [f"denied {place}" for place in places]
    assert not any(Path(place, "swarm-probe").exists() for place in places)


async def test_the_workspace_is_writable_and_its_files_readable_on_the_host(
    backend: Backend, model: RunDir
) -> None:
    """A file written in the workspace appears on the host, owned by the host user or the agent (1000)."""
    lines, exit_ = await run_to_end(backend, model.spec(_run_id(), "sh", "-c", "echo data > out.txt"))
    written = model.workspace / "out.txt"
    assert (lines, exit_.code) == ([], 0)
    assert written.read_text() == "data\n"
    assert written.stat().st_uid in {os.getuid(), 1000}


async def test_a_fork_bomb_is_contained(backend: Backend, model: RunDir) -> None:
    """Unbounded forking fails at the pids limit, the sandbox ends, and the host can still fork."""
    only(backend, "container", "bubblewrap")
    marker = _sleep_marker()
    script = f"i=0; while [ $i -lt 5000 ]; do sleep {marker} & i=$((i+1)); done; echo spawned $i"
    lines, exit_ = await run_to_end(backend, model.spec(_run_id(), "sh", "-c", script, resources=SMALL))
    assert exit_.code != 0
    assert "spawned 5000" not in lines  # the pids limit stopped it (the shell's complaint may be lost)
    await _none_left(marker)
    host = await asyncio.create_subprocess_exec("true")
    assert await host.wait() == 0


async def test_a_memory_hog_is_stopped(backend: Backend, model: RunDir) -> None:
    """A process growing past the memory limit does not survive; a container reports the OOM kill."""
    script = 'x=$(head -c 400000000 /dev/zero | tr "\\0" a); echo survived'
    lines, exit_ = await run_to_end(backend, model.spec(_run_id(), "sh", "-c", script, resources=SMALL))
    assert "survived" not in lines
    assert exit_.code != 0
    assert exit_.oom_killed == (backend.name == "container")


async def test_a_file_cannot_outgrow_the_file_size_limit(backend: Backend, model: RunDir) -> None:
    """Writing 2 MB under a 1 MiB file size limit stops at the limit and fails."""
    spec = model.spec(
        _run_id(), "sh", "-c", "head -c 2000000 /dev/zero > big.bin; echo status $?", resources=SMALL
    )
    lines, _ = await run_to_end(backend, spec)
    assert lines != ["status 0"]
    assert (model.workspace / "big.bin").stat().st_size <= SMALL.file_size_bytes


async def test_the_process_backend_says_it_is_unsafe_on_every_run(backend: Backend, model: RunDir) -> None:
    """The process backend is marked unsafe and logs a warning for each run it starts."""
    only(backend, "process")
    assert not backend.safe
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            await run_to_end(backend, model.spec(_run_id(), "true", resources=Resources()))
    warnings = [entry for entry in logs if entry["event"] == "sandbox_unsafe"]
    assert len(warnings) == 2
    assert all(entry["log_level"] == "warning" for entry in warnings)
