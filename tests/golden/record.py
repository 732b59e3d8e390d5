"""Record a golden log: a project and two runs, written through the real bus and the real deciders.

    .venv/bin/python tests/golden/record.py tests/golden/run_lifecycle.jsonl

Starts an embedded nats-server in a temporary directory, sends the commands and appends the events with
`bus.Log`, reads the whole stream back and writes one JSON line per record:
`{"seq", "subject", "digest", "data"}`, where `data` is the stored message as a string, so the exact bytes
the hash chain covers are kept. Ids and times are fixed, so a recording is identical every time.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bus
from schemas import (
    AgentMessage,
    AnyEvent,
    ArtifactStored,
    Body,
    CancelRun,
    CommandExecuted,
    CommandRun,
    CommandStarted,
    Context,
    CreateProject,
    FileChange,
    FilesChanged,
    GitSource,
    IdSource,
    Kind,
    Reasoning,
    RunLimits,
    RunSucceeded,
    RunSummary,
    StartRun,
    TurnCompleted,
    Usage,
    WorkspacePrepared,
    project_state,
    run_state,
)

TENANT = "acme"
T0 = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
REGISTRY = "sys_registry"
EXECUTOR = run_state.ExecutorInfo(
    executor_id="exe_golden-1", sandbox="docker", sandbox_version="27.3.1", codex_version="0.46.0"
)
BASELINE = "3f2a9c4e8b1d7f6a5c0e9b8d7a6f5e4d3c2b1a09"
TEST_COMMAND = "bash -lc 'pytest -q tests/test_cart.py'"
FAILED_OUTPUT = (
    "F.\nFAILED tests/test_cart.py::test_total_rounds_half_up - assert 10.0 == 10.01\n1 failed, 1 passed\n"
)
PASSED_OUTPUT = "..\n2 passed in 0.04s\n"
DIFF = (
    "diff --git a/shop/cart.py b/shop/cart.py\n--- a/shop/cart.py\n+++ b/shop/cart.py\n@@ -12 +12 @@\n"
    "-        return round(total, 2)\n+        return float(Decimal(total).quantize(CENT, ROUND_HALF_UP))\n"
)
FINAL_MESSAGE = "Fixed the rounding in `Cart.total` — it now rounds half up; both tests pass."
USAGE = Usage(
    input_tokens=18_250, cached_input_tokens=12_032, output_tokens=1_408, reasoning_output_tokens=640
)


class Script:
    """Seeded ids and a clock that moves one second per message, so every recording is the same."""

    def __init__(self, seed: int = 2025) -> None:
        self._tick = 0
        self.ids = IdSource(clock_ms=self._millis, entropy=random.Random(seed).randbytes)
        self.client = self.ids.new(Kind.KEY)

    def _millis(self) -> int:
        return int(self.now().timestamp() * 1000)

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self._tick)

    def context(self, actor: str | None = None) -> Context:
        self._tick += 1
        return Context(now=self.now(), actor=actor, ids=self.ids)

    def command(self) -> dict[str, Any]:
        """The envelope of the next client command."""
        self._tick += 1
        return {"id": self.ids.new(Kind.COMMAND), "at": self.now(), "tenant": TENANT, "actor": self.client}

    def step(self, command: StartRun) -> dict[str, Any]:
        """The envelope of the next executor event of `command`'s run."""
        return {**self.context(EXECUTOR.executor_id).envelope(command), "run_id": command.run_id}


async def create_project(conn: bus.Connection, script: Script) -> str:
    command = CreateProject(
        **script.command(),
        origin="cli/0.1.0",
        project_id=script.ids.new(Kind.PROJECT),
        name="shop",
        source=GitSource(url="https://git.example.com/acme/shop.git", ref="main"),
        description="The Acme web shop",
    )
    await conn.log.send(command)
    state = project_state.ProjectState(project_id=command.project_id)
    await conn.log.append_all(project_state.decide(state, command, script.context(REGISTRY)), bus.START)
    return command.project_id


async def start_run(
    conn: bus.Connection, script: Script, project_id: str, instructions: str
) -> tuple[StartRun, list[AnyEvent], bus.Position]:
    """Send a StartRun and append the executor's `run.started`, as an executor does on delivery."""
    command = StartRun(
        **script.command(),
        run_id=script.ids.new(Kind.RUN),
        project_id=project_id,
        instructions=instructions,
        limits=RunLimits(deadline_seconds=1_800, max_tokens=200_000),
    )
    await conn.log.send(command)
    state = run_state.RunState(run_id=command.run_id)
    started = run_state.decide(state, command, script.context(EXECUTOR.executor_id), EXECUTOR)
    prepared = WorkspacePrepared(
        **script.step(command), source="git", baseline_commit=BASELINE, files=42, bytes=183_204
    )
    events: list[AnyEvent] = [*started, prepared]
    return command, events, await conn.log.append_all(events, bus.START)


def ran(script: Script, command: StartRun, item_id: str, exit_code: int, output: Body) -> list[AnyEvent]:
    """The two events of one shell command the agent runs: started, then executed."""
    status = "completed" if exit_code == 0 else "failed"
    return [
        CommandStarted(**script.step(command), item_id=item_id, command=TEST_COMMAND),
        CommandExecuted(
            **script.step(command),
            item_id=item_id,
            command=TEST_COMMAND,
            exit_code=exit_code,
            status=status,
            output=output,
        ),
    ]


async def succeeding_steps(conn: bus.Connection, script: Script, command: StartRun) -> list[AnyEvent]:
    step = script.step
    diff = await conn.blobs.put(DIFF.encode(), "text/x-diff")
    changes = [FileChange(path="shop/cart.py", kind="update")]
    summary = RunSummary(
        goal=command.instructions,
        files_changed=["shop/cart.py"],
        commands=[
            CommandRun(command=TEST_COMMAND, exit_code=1),
            CommandRun(command=TEST_COMMAND, exit_code=0),
        ],
        final_message=FINAL_MESSAGE,
        usage=USAGE,
    )
    return [
        Reasoning(**step(command), item_id="item_0", text=Body(text="**Reproducing the failure** first.")),
        *ran(script, command, "item_1", 1, await conn.blobs.body(FAILED_OUTPUT)),
        FilesChanged(**step(command), item_id="item_2", changes=changes, status="completed"),
        *ran(script, command, "item_3", 0, await conn.blobs.body(PASSED_OUTPUT)),
        AgentMessage(**step(command), item_id="item_4", text=Body(text=FINAL_MESSAGE)),
        TurnCompleted(**step(command), usage=USAGE),
        ArtifactStored(**step(command), name="final.diff", kind="diff", blob=diff),
        RunSucceeded(**step(command), summary=summary),
    ]


async def succeeded_run(conn: bus.Connection, script: Script, project_id: str) -> None:
    command, _, position = await start_run(conn, script, project_id, "Make tests/test_cart.py pass.")
    await conn.log.append_all(await succeeding_steps(conn, script, command), position)


async def cancelled_run(conn: bus.Connection, script: Script, project_id: str) -> None:
    """A run the client cancels while it is running; the executor appends the cancellation."""
    start, events, position = await start_run(conn, script, project_id, "Upgrade every dependency.")
    cancel = CancelRun(**script.command(), run_id=start.run_id, reason="too broad; splitting it up")
    await conn.log.send(cancel)
    state = run_state.fold(start.run_id, events)
    await conn.log.append_all(run_state.decide(state, cancel, script.context(EXECUTOR.executor_id)), position)


def line(record: bus.Record) -> str:
    fields = {
        "seq": record.seq,
        "subject": record.subject,
        "digest": record.digest,
        "data": record.data.decode(),
    }
    return json.dumps(fields, ensure_ascii=False)


async def record(out: Path, server: bus.ServerSettings, data_dir: Path) -> int:
    """Record the log on a fresh embedded server in `data_dir` into `out`; return the number of records."""
    async with (
        bus.embedded(server, data_dir) as running,
        bus.connect(bus.Settings(url=running.url), name="golden-recorder") as conn,
    ):
        await conn.provision()
        script = Script()
        project_id = await create_project(conn, script)
        await succeeded_run(conn, script, project_id)
        await cancelled_run(conn, script, project_id)
        lines = [line(stored) async for stored in conn.log.read()]
    out.write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write(f"usage: record.py OUT.jsonl\n{__doc__}")
        return 2
    with tempfile.TemporaryDirectory(prefix="golden-nats-") as data_dir:
        count = asyncio.run(record(Path(args[0]), bus.ServerSettings(), Path(data_dir)))
    sys.stderr.write(f"recorded {count} messages to {args[0]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
