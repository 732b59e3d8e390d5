"""Two tenants' projects and runs in every state, written to the real log for the query tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bus
from schemas import (
    AgentMessage,
    AnyEvent,
    ArtifactStored,
    BlobRef,
    Body,
    CommandExecuted,
    CreateProject,
    FailureReason,
    IdSource,
    Kind,
    LocalSource,
    ModelCallRecorded,
    ProjectArchived,
    ProjectCreated,
    RunCancelled,
    RunFailed,
    RunStarted,
    RunSucceeded,
    RunSummary,
    RunTimedOut,
    StartRun,
    TurnCompleted,
    Usage,
    subjects,
)

ACME, GLOBEX = "acme", "globex"
ACTOR, EXECUTOR = "key_tester", "exe_tester"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ids = IdSource()


@dataclass(frozen=True)
class Run:
    tenant: str
    project_id: str
    queued_at: datetime
    outcome: str  # queued, running, succeeded, failed, cancelled, timed_out
    task_type: str = "code"
    run_id: str = field(default_factory=lambda: ids.new(Kind.RUN))


@dataclass
class Seeded:
    """What was written: the runs and projects of each tenant, and the last stream sequence."""

    runs: list[Run] = field(default_factory=list)
    projects: dict[str, list[str]] = field(default_factory=dict)
    last_seq: int = 0

    def of(self, tenant: str) -> list[Run]:
        return [run for run in self.runs if run.tenant == tenant]

    def one(self, tenant: str, outcome: str) -> Run:
        return next(run for run in self.of(tenant) if run.outcome == outcome)


class Writer:
    """Sends commands and appends events, keeping each aggregate's position and the last sequence."""

    def __init__(self, log: bus.Log) -> None:
        self._log = log
        self._at: dict[str, bus.Position] = {}
        self.last_seq = 0

    async def send(self, command: CreateProject | StartRun) -> None:
        ack = await self._log.send(command)
        self.last_seq = max(self.last_seq, ack.seq)

    async def append(self, event: AnyEvent) -> int:
        subject = subjects.of_event(event)
        position = await self._log.append(event, self._at.get(subject, bus.START))
        self._at[subject] = position
        self.last_seq = max(self.last_seq, position.seq)
        return position.seq


def _common(tenant: str, at: datetime, actor: str = EXECUTOR) -> dict[str, Any]:
    """The envelope fields of a new event: a fresh id each call, so no two events share a message id."""
    return {"id": ids.new(Kind.EVENT), "at": at, "tenant": tenant, "actor": actor}


def _of(run: Run, at: datetime) -> dict[str, Any]:
    return _common(run.tenant, at) | {"run_id": run.run_id}


async def project(writer: Writer, tenant: str, name: str, *, archived: bool = False) -> str:
    project_id, source = ids.new(Kind.PROJECT), LocalSource(path=f"/srv/{name}")
    named: dict[str, Any] = {"project_id": project_id, "name": name, "source": source}
    await writer.send(CreateProject(id=ids.new(Kind.COMMAND), at=T0, tenant=tenant, actor=ACTOR, **named))
    await writer.append(ProjectCreated(**_common(tenant, T0, ACTOR), **named))
    if archived:
        await writer.append(ProjectArchived(**_common(tenant, T0 + MINUTE, ACTOR), project_id=project_id))
    return project_id


def outcome(run: Run, at: datetime) -> AnyEvent | None:
    """The terminal event a run's outcome calls for, or None while it is still queued or running."""
    common = _of(run, at)
    match run.outcome:
        case "succeeded":
            summary = RunSummary(goal="fix the tests", final_message="all green")
            return RunSucceeded(**common, summary=summary)
        case "failed":
            return RunFailed(**common, reason=FailureReason.NONZERO_EXIT, detail="pytest exited 1")
        case "cancelled":
            return RunCancelled(**common, cancelled_by=ACTOR)
        case "timed_out":
            return RunTimedOut(**common, limit="deadline", seconds=60)
        case _:
            return None


def work(run: Run, at: datetime) -> list[AnyEvent]:
    """The steps, model call, usage and artifact of a run that does some work."""
    usage = Usage(input_tokens=1_000, cached_input_tokens=200, output_tokens=300)
    blob = BlobRef(sha256="ab" * 32, size=120, media_type="text/x-diff")
    return [
        AgentMessage(**_of(run, at), item_id="item_0", text=Body(text="looking at the tests")),
        CommandExecuted(
            **_of(run, at), item_id="item_1", command="pytest -q", exit_code=0, status="completed"
        ),
        ModelCallRecorded(**_of(run, at), model="gpt-5-codex", status=200, latency_ms=850, usage=usage),
        TurnCompleted(**_of(run, at), usage=usage),
        ArtifactStored(**_of(run, at), name="changes.diff", kind="diff", blob=blob),
    ]


async def play(writer: Writer, run: Run) -> None:
    """Queue `run`, then (unless it stays queued) start it, let it work and finish as its outcome says."""
    await writer.send(
        StartRun(
            id=ids.new(Kind.COMMAND), at=run.queued_at, tenant=run.tenant, actor=ACTOR, run_id=run.run_id,
            project_id=run.project_id, instructions="fix the tests", task_type=run.task_type,
        )
    )  # fmt: skip
    if run.outcome == "queued":
        return
    started = run.queued_at + MINUTE
    await writer.append(RunStarted(**_of(run, started), attempt=1, executor_id=EXECUTOR, sandbox="local"))
    events = work(run, started) if run.outcome == "succeeded" else []
    finished = outcome(run, started + 2 * MINUTE)
    for event in [*events, *([finished] if finished else [])]:
        await writer.append(event)


async def seed(log: bus.Log) -> tuple[Seeded, Writer]:
    """Acme: two projects (one archived), six runs in every state, two queued at the same instant.
    Globex: one project, two runs. Returns what was written and the writer, for appending more."""
    writer, seeded = Writer(log), Seeded()
    a1, a2 = await project(writer, ACME, "api"), await project(writer, ACME, "web", archived=True)
    g1 = await project(writer, GLOBEX, "billing")
    seeded.projects = {ACME: [a1, a2], GLOBEX: [g1]}
    seeded.runs = [
        Run(ACME, a1, T0 + 1 * MINUTE, "queued"),
        Run(ACME, a1, T0 + 2 * MINUTE, "succeeded"),
        Run(ACME, a1, T0 + 3 * MINUTE, "failed"),
        Run(ACME, a2, T0 + 4 * MINUTE, "cancelled"),
        Run(ACME, a1, T0 + 4 * MINUTE, "running"),
        Run(ACME, a2, T0 + 5 * MINUTE, "timed_out", task_type="research"),
        Run(GLOBEX, g1, T0 + 1 * MINUTE, "succeeded"),
        Run(GLOBEX, g1, T0 + 6 * MINUTE, "failed"),
    ]
    for each in seeded.runs:
        await play(writer, each)
    seeded.last_seq = writer.last_seq
    return seeded, writer


def newest_first(runs: list[Run]) -> list[str]:
    """Run ids in the order `list_runs` promises: queued time, then run id, both descending."""
    return [r.run_id for r in sorted(runs, key=lambda r: (r.queued_at, r.run_id), reverse=True)]
