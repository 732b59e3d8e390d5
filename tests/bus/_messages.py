"""Builders of real commands and events for the bus tests."""

from __future__ import annotations

from datetime import UTC, datetime

import bus
from schemas import AgentMessage, Body, IdSource, Kind, RunStarted, StartRun, subjects

TENANT = "acme"
ACTOR = "key_tester"
EXECUTOR = "exe_tester"
START_RUNS = "swarm.*.cmd.run.*.start"

ids = IdSource()


def now() -> datetime:
    return datetime.now(UTC)


def new_run_id() -> str:
    return ids.new(Kind.RUN)


def start_run(
    run_id: str | None = None, *, tenant: str = TENANT, instructions: str = "fix the tests"
) -> StartRun:
    return StartRun(
        id=ids.new(Kind.COMMAND),
        at=now(),
        tenant=tenant,
        actor=ACTOR,
        run_id=run_id or new_run_id(),
        project_id=ids.new(Kind.PROJECT),
        instructions=instructions,
    )


def run_started(run_id: str, *, tenant: str = TENANT, attempt: int = 1) -> RunStarted:
    return RunStarted(
        id=ids.new(Kind.EVENT),
        at=now(),
        tenant=tenant,
        actor=EXECUTOR,
        run_id=run_id,
        attempt=attempt,
        executor_id=EXECUTOR,
        sandbox="local",
    )


def agent_message(run_id: str, text: str = "hello", *, tenant: str = TENANT) -> AgentMessage:
    return AgentMessage(
        id=ids.new(Kind.EVENT),
        at=now(),
        tenant=tenant,
        actor=EXECUTOR,
        run_id=run_id,
        item_id=ids.new(Kind.EVENT),
        text=Body(text=text),
    )


def run_subject(run_id: str, *, tenant: str = TENANT) -> str:
    return subjects.events(tenant, "run", run_id)


async def append_messages(
    log: bus.Log, run_id: str, count: int, at: bus.Position = bus.START
) -> bus.Position:
    """Append `count` agent messages to one run, each expecting the position the previous one left."""
    for n in range(count):
        at = await log.append(agent_message(run_id, f"message {n}"), at)
    return at
