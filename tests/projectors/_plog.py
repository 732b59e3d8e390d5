"""Logs for the projection tests: the golden recording as records, and a mixed workload on the real bus."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bus
from schemas import (
    AgentMessage,
    AnyCommand,
    AnyEvent,
    ArchiveProject,
    ArtifactStored,
    BlobRef,
    Body,
    CancelRun,
    CommandExecuted,
    CommandStarted,
    CreateProject,
    FailureReason,
    FileChange,
    FilesChanged,
    GitSource,
    IdSource,
    Kind,
    LimitWarning,
    LineQuarantined,
    LocalSource,
    ModelCallRecorded,
    PlanUpdated,
    ProjectArchived,
    ProjectCreated,
    ProjectUpdated,
    Reasoning,
    RunCancelled,
    RunFailed,
    RunStarted,
    RunSucceeded,
    RunSummary,
    RunTimedOut,
    StartRun,
    TodoItem,
    ToolCalled,
    TurnCompleted,
    UpdateProject,
    Usage,
    WebSearched,
    WorkspacePrepared,
    subjects,
)

GOLDEN = Path(__file__).parents[1] / "golden" / "run_lifecycle.jsonl"
ACTOR, EXECUTOR, REGISTRY = "key_tester", "exe_tester", "sys_registry"
T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
OUTCOMES = ("succeeded", "failed", "cancelled", "timed_out", "retried", "running", "queued")
ids = IdSource()


def golden_records(path: Path = GOLDEN) -> list[bus.Record]:
    """The recorded log as the bus hands it to a projector, with `data` as the exact stored bytes."""
    records = []
    for text in path.read_text(encoding="utf-8").splitlines():
        line = json.loads(text)
        records.append(
            bus.Record(
                seq=line["seq"], subject=line["subject"], data=line["data"].encode(), digest=line["digest"]
            )
        )
    return records


@dataclass
class Written:
    """What a workload put in the log, for exact assertions on the tables."""

    messages: int = 0
    last_seq: int = 0
    types: Counter[str] = field(default_factory=Counter)
    runs: dict[str, str] = field(default_factory=dict)  # run id -> expected status

    def count(self, *types: str) -> int:
        return sum(self.types[name] for name in types)


STEP_TYPES = (
    "run.agent_message",
    "run.reasoning",
    "run.command_started",
    "run.command_executed",
    "run.files_changed",
    "run.tool_called",
    "run.web_searched",
    "run.plan_updated",
)


class Writer:
    """Sends commands and appends events, each aggregate at the position its last append left."""

    def __init__(self, log: bus.Log) -> None:
        self._log = log
        self._at: dict[str, bus.Position] = {}
        self.written = Written()

    async def send(self, command: AnyCommand) -> None:
        self._count(command.type, (await self._log.send(command)).seq)

    async def append(self, event: AnyEvent) -> None:
        subject = subjects.of_event(event)
        self._at[subject] = await self._log.append(event, self._at.get(subject, bus.START))
        self._count(event.type, self._at[subject].seq)

    def _count(self, message_type: str, seq: int) -> None:
        self.written.messages += 1
        self.written.types[message_type] += 1
        self.written.last_seq = max(self.written.last_seq, seq)


def _command(tenant: str, at: datetime) -> dict[str, Any]:
    return {"id": ids.new(Kind.COMMAND), "at": at, "tenant": tenant, "actor": ACTOR}


def _event(tenant: str, at: datetime, cause: str, actor: str = EXECUTOR) -> dict[str, Any]:
    return {"id": ids.new(Kind.EVENT), "at": at, "tenant": tenant, "actor": actor, "causation_id": cause}


async def projects(writer: Writer, tenant: str) -> str:
    """Two projects: one created and updated (the one runs use), one created and archived."""
    kept, archived = ids.new(Kind.PROJECT), ids.new(Kind.PROJECT)
    for project_id, name in ((kept, "api"), (archived, "legacy")):
        fields: dict[str, Any] = {
            "project_id": project_id,
            "name": name,
            "source": GitSource(url=f"https://git.example.com/{tenant}/{name}.git", ref="main"),
        }
        create = CreateProject(**_command(tenant, T0), **fields)
        await writer.send(create)
        await writer.append(ProjectCreated(**_event(tenant, T0, create.id, REGISTRY), **fields))
    changed: dict[str, Any] = {
        "project_id": kept,
        "description": "v2",
        "source": LocalSource(path="/srv/api"),
    }
    update = UpdateProject(**_command(tenant, T0 + SECOND), **changed)
    await writer.send(update)
    await writer.append(ProjectUpdated(**_event(tenant, T0 + SECOND, update.id, REGISTRY), **changed))
    archive = ArchiveProject(**_command(tenant, T0 + SECOND), project_id=archived, reason="moved")
    await writer.send(archive)
    done = _event(tenant, T0 + 2 * SECOND, archive.id, REGISTRY)
    await writer.append(ProjectArchived(**done, project_id=archived, reason="moved"))
    return kept


def working(start: StartRun, at: datetime) -> list[AnyEvent]:
    """What a run does between start and finish: every kind of step, usage, a model call, an artifact."""
    cause, tenant, run_id = start.id, start.tenant, start.run_id

    def env(offset: int) -> dict[str, Any]:
        return {**_event(tenant, at + offset * SECOND, cause), "run_id": run_id}

    request, response = BlobRef(sha256="a" * 64, size=900), BlobRef(sha256="b" * 64, size=300)
    usage = Usage(
        input_tokens=9_000, cached_input_tokens=4_000, output_tokens=700, reasoning_output_tokens=128
    )
    plan = [TodoItem(text="reproduce", completed=True), TodoItem(text="fix"), TodoItem(text="verify")]
    finished = [TodoItem(text=item.text, completed=True) for item in plan]
    return [
        WorkspacePrepared(**env(1), source="git", baseline_commit="c" * 40, files=12, bytes=40_960),
        PlanUpdated(**env(2), item_id="plan", items=plan),
        Reasoning(**env(3), item_id="item_0", text=Body(text="Reading the failing test.")),
        ModelCallRecorded(**env(4), model="gpt-5-mini", status=200, latency_ms=420, usage=usage,
                          request=request, response=response),
        CommandStarted(**env(5), item_id="item_1", command="pytest -q"),
        CommandExecuted(**env(6), item_id="item_1", command="pytest -q", exit_code=1, status="failed",
                        output=Body(text="1 failed")),
        FilesChanged(**env(7), item_id="item_2", changes=[FileChange(path="src/app.py", kind="update")],
                     status="completed"),
        ToolCalled(**env(8), item_id="item_3", server="docs", tool="search", status="completed"),
        WebSearched(**env(9), item_id="item_4", query="pytest approx"),
        LineQuarantined(**env(10), raw=Body(text="{not json"), problem="unparseable line"),
        LimitWarning(**env(11), limit="tokens", used=18_000, soft_limit=16_000, hard_limit=20_000),
        PlanUpdated(**env(12), item_id="plan", items=finished),
        AgentMessage(**env(13), item_id="item_5", text=Body(text="Fixed; the suite passes.")),
        TurnCompleted(**env(14), usage=usage),
        ArtifactStored(**env(15), name="final.diff", kind="diff", blob=BlobRef(sha256="d" * 64, size=512)),
    ]  # fmt: skip


async def run(writer: Writer, tenant: str, project_id: str, index: int) -> None:
    """One run through to the outcome its index picks (see `OUTCOMES`), appended in order."""
    outcome = OUTCOMES[index % len(OUTCOMES)]
    queued = T0 + index * 60 * SECOND
    start = StartRun(
        **_command(tenant, queued), run_id=ids.new(Kind.RUN), project_id=project_id,
        instructions="Make the failing test pass.", task_type=("code", "review")[index % 2],
    )  # fmt: skip
    writer.written.runs[start.run_id] = {"retried": "succeeded"}.get(outcome, outcome)
    await writer.send(start)
    if outcome == "queued":
        return
    started = queued + (index % 5 + 1) * SECOND

    def env(at: datetime) -> dict[str, Any]:
        return {**_event(tenant, at, start.id), "run_id": start.run_id}

    events: list[AnyEvent] = [
        RunStarted(**env(started), attempt=1, executor_id=EXECUTOR, sandbox="docker", codex_version="0.46.0")
    ]
    if outcome == "retried":  # the first executor was lost before doing anything: a second attempt
        events.append(
            RunStarted(**env(started + SECOND), attempt=2, executor_id="exe_other", sandbox="docker")
        )
    events += working(start, started + SECOND)
    end = started + (20 + index) * SECOND
    for event in events:
        await writer.append(event)
    match outcome:
        case "succeeded" | "retried":
            summary = RunSummary(goal=start.instructions, final_message="done")
            await writer.append(RunSucceeded(**env(end), summary=summary))
        case "failed":
            await writer.append(RunFailed(**env(end), reason=FailureReason.NONZERO_EXIT, detail="exit 1"))
        case "cancelled":
            cancel = CancelRun(**_command(tenant, end - SECOND), run_id=start.run_id, reason="not needed")
            await writer.send(cancel)
            await writer.append(RunCancelled(**env(end), cancelled_by=ACTOR, reason="not needed"))
        case "timed_out":
            await writer.append(RunTimedOut(**env(end), limit="deadline", seconds=600))


async def mixed(log: bus.Log, *, tenants: tuple[str, ...] = ("acme", "globex"), runs: int = 7) -> Written:
    """For each tenant: projects created, updated and archived, then `runs` runs appended concurrently."""
    writer = Writer(log)
    for tenant in tenants:
        project_id = await projects(writer, tenant)
        async with asyncio.TaskGroup() as group:
            for index in range(runs):
                group.create_task(run(writer, tenant, project_id, index))
    return writer.written
