"""A deterministic workload for two or more tenants: log records built from real `schemas` messages.

Each run is a start command followed by its events (started, a command, a model call, usage, an artifact,
a message and a terminal event), so every read-model table and dashboard view gets rows.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import bus
import schemas
from schemas import (
    AgentMessage,
    ArtifactStored,
    BlobRef,
    Body,
    CommandExecuted,
    CreateProject,
    FailureReason,
    GitSource,
    IdSource,
    Kind,
    Message,
    ModelCallRecorded,
    ProjectCreated,
    RunFailed,
    RunStarted,
    RunSucceeded,
    RunSummary,
    StartRun,
    TurnCompleted,
    Usage,
    subjects,
)

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
TENANTS = ("acme", "globex")


class Workload:
    """Appends messages as consecutive log records; ids and times are fixed by the seed."""

    def __init__(self, seed: int = 7) -> None:
        self._tick = 0
        self._ids = IdSource(clock_ms=self._millis, entropy=random.Random(seed).randbytes)
        self.records: list[bus.Record] = []

    def _millis(self) -> int:
        return int(self.now().timestamp() * 1000)

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self._tick)

    def add(self, message: Message) -> None:
        self._tick += 1
        if isinstance(message, schemas.CommandBase):
            subject = subjects.of_command(message)
        else:
            subject = subjects.of_event(message)
        self.records.append(
            bus.Record(seq=len(self.records) + 1, subject=subject, data=schemas.encode(message))
        )

    def _envelope(self, tenant: str, kind: Kind, actor: str) -> dict[str, object]:
        return {"id": self._ids.new(kind), "at": self.now(), "tenant": tenant, "actor": actor}

    def project(self, tenant: str) -> str:
        project_id = self._ids.new(Kind.PROJECT)
        source = GitSource(url=f"https://git.example.com/{tenant}/shop.git")
        self.add(CreateProject(**self._command(tenant), project_id=project_id, name="shop", source=source))
        self.add(
            ProjectCreated(
                **self._event(tenant, "sys_registry"), project_id=project_id, name="shop", source=source
            )
        )
        return project_id

    def _command(self, tenant: str) -> dict[str, object]:
        return self._envelope(tenant, Kind.COMMAND, f"key_{tenant}-analyst")

    def _event(self, tenant: str, actor: str = "exe_worker-1") -> dict[str, object]:
        return self._envelope(tenant, Kind.EVENT, actor)

    def run(self, tenant: str, project_id: str, *, succeed: bool = True) -> str:
        run_id = self._ids.new(Kind.RUN)
        self.add(
            StartRun(**self._command(tenant), run_id=run_id, project_id=project_id, instructions="Fix it")
        )
        for event in self._run_events(tenant, run_id, succeed):
            self.add(event)
        return run_id

    def _run_events(self, tenant: str, run_id: str, succeed: bool) -> Iterator[Message]:
        run = {"run_id": run_id}
        usage = Usage(input_tokens=1_000, cached_input_tokens=200, output_tokens=300)
        blob = BlobRef(sha256=hashlib.sha256(run_id.encode()).hexdigest(), size=42, media_type="text/x-diff")
        yield RunStarted(
            **self._event(tenant), **run, attempt=1, executor_id="exe_worker-1", sandbox="docker"
        )
        yield CommandExecuted(
            **self._event(tenant),
            **run,
            item_id="item_1",
            command="pytest -q",
            exit_code=0,
            status="completed",
        )
        yield ModelCallRecorded(
            **self._event(tenant), **run, model="gpt-5-mini", status=200, latency_ms=850, usage=usage
        )
        yield TurnCompleted(**self._event(tenant), **run, usage=usage)
        yield ArtifactStored(**self._event(tenant), **run, name="final.diff", kind="diff", blob=blob)
        yield AgentMessage(
            **self._event(tenant), **run, item_id="item_2", text=Body(text=f"done for {tenant}")
        )
        if succeed:
            yield RunSucceeded(**self._event(tenant), **run, summary=RunSummary(goal="Fix it", usage=usage))
        else:
            reason = FailureReason.NONZERO_EXIT
            yield RunFailed(**self._event(tenant), **run, reason=reason, detail="tests failed")


def workload(tenants: tuple[str, ...] = TENANTS, runs: int = 3, seed: int = 7) -> list[bus.Record]:
    """Per tenant one project and `runs` runs (every third one fails), interleaved across tenants."""
    load = Workload(seed)
    projects = {tenant: load.project(tenant) for tenant in tenants}
    for index in range(runs):
        for tenant in tenants:
            load.run(tenant, projects[tenant], succeed=index % 3 != 2)
    return load.records
