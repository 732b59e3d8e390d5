"""The demo `swarm up --demo` runs: a project from the bundled sample repository and one run, shown live."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

import bus
from schemas import (
    ArtifactStored,
    CreateProject,
    IdSource,
    Kind,
    LocalSource,
    RunSucceeded,
    StartRun,
    decode_event,
    subjects,
)
from schemas.run import RunEvents, TerminalEvents
from swarm import render

TENANT = "default"
ACTOR = "sys_demo"
PROJECT_ID = "prj_00000000000000000000000001"  # fixed, so every demo run lands in the same project
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample-repo"
INSTRUCTIONS = (
    "Add a --shout option to greet.sh that prints the greeting in capital letters, "
    "add a check for it to test.sh, and run the checks."
)


async def show(
    conn: bus.Connection, *, offline: bool, as_json: bool, console: str | None = None
) -> RunEvents:
    """Create the demo project (once), start a run, print its steps as they happen; return its ending."""
    ids = IdSource()
    await conn.log.send(_project(ids), idempotency_key=f"demo-project-{PROJECT_ID}")
    command = _run(ids)
    await conn.log.send(command)
    if not as_json:
        mode = "offline: the scripted model plays the agent" if offline else "with the configured model"
        print(f"\ndemo run {command.run_id} on the sample project ({mode})", flush=True)
    ending = await _follow(conn, command, as_json)
    await _conclude(conn, command, ending, as_json)
    if console and not as_json:
        page = f"{console}/console/#run/{command.run_id}"
        print(f"see it in the console: {page} (or `swarm show {command.run_id}`)")
    return ending


def _project(ids: IdSource) -> CreateProject:
    return CreateProject(
        id=ids.new(Kind.COMMAND),
        at=datetime.now(UTC),
        tenant=TENANT,
        actor=ACTOR,
        project_id=PROJECT_ID,
        name="sample",
        source=LocalSource(path=str(SAMPLE)),
        description="the greeting tool bundled with codex-swarm (examples/sample-repo)",
    )


def _run(ids: IdSource) -> StartRun:
    return StartRun(
        id=ids.new(Kind.COMMAND),
        at=datetime.now(UTC),
        tenant=TENANT,
        actor=ACTOR,
        run_id=ids.new(Kind.RUN),
        project_id=PROJECT_ID,
        instructions=INSTRUCTIONS,
    )


async def _follow(conn: bus.Connection, command: StartRun, as_json: bool) -> RunEvents:
    started = time.monotonic()
    async for record in conn.log.follow(subjects.events(TENANT, "run", command.run_id)):
        event = decode_event(record.data)
        if as_json:
            print(json.dumps({"event": "step", "seq": record.seq, "type": event.type}), flush=True)
        elif (text := render.line(event)) is not None:  # type: ignore[arg-type]  # a run subject
            print(f"[{time.monotonic() - started:5.1f}s] {text}", flush=True)
        if isinstance(event, TerminalEvents):
            return event
    raise AssertionError("a followed subject never ends")


async def _conclude(conn: bus.Connection, command: StartRun, ending: RunEvents, as_json: bool) -> None:
    diff = await _diff(conn, command)
    if as_json:
        summary = msgspec.to_builtins(ending.summary) if isinstance(ending, RunSucceeded) else None
        print(
            json.dumps({"event": "demo", "run_id": command.run_id, "type": ending.type, "summary": summary})
        )
        return
    if diff:
        print("\nthe run's diff (artifact diff.patch):\n" + diff, flush=True)
    if isinstance(ending, RunSucceeded):
        print(f"usage: {render.tokens(ending.summary.usage)}", flush=True)
    print(f"the run's events: swarm audit verify --tenant {TENANT} --run {command.run_id}", flush=True)


async def _diff(conn: bus.Connection, command: StartRun) -> str:
    subject = subjects.events(TENANT, "run", command.run_id)
    async for record in conn.log.read(subject):
        event = decode_event(record.data)
        if isinstance(event, ArtifactStored) and event.name == "diff.patch":
            return (await conn.blobs.get(event.blob.sha256)).decode(errors="replace")
    return ""
