"""The registry handler: project commands in, project events out (load, decide, append).

A durable work queue shared by every replica; the expected subject sequence of each append makes
two replicas deciding on the same project at once safe (the loser reloads and decides again).
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

import bus
from schemas import Context, IdSource, Rejected, decode_command, decode_event, subjects
from schemas.project import ArchiveProject, CreateProject, UpdateProject
from schemas.project_state import ProjectState, decide, fold

log = structlog.get_logger(__name__)

QUEUE = "registry"
PROJECT_COMMANDS = "swarm.*.cmd.project.>"


class Registry:
    def __init__(self, conn: bus.Connection, actor: str = "sys_registry", concurrency: int = 4) -> None:
        self._conn = conn
        self._actor = actor
        self._ids = IdSource()
        self.worker = bus.Worker(
            conn.js,
            conn.settings.stream,
            bus.Queue(durable=QUEUE, subject=PROJECT_COMMANDS, ack_wait=10.0),
            self._handle,
            concurrency=concurrency,
        )

    async def run(self) -> None:
        await self.worker.run()

    async def shutdown(self, grace: float = 5.0) -> None:
        await self.worker.shutdown(grace)

    async def _handle(self, delivery: bus.Delivery) -> None:
        command = decode_command(delivery.data)
        if not isinstance(command, CreateProject | UpdateProject | ArchiveProject):
            raise bus.Reject(f"{command.type} is not a project command")
        subject = subjects.events(command.tenant, "project", command.project_id)
        at = await self._conn.log.position(subject)
        state = await self._load(subject, command.project_id, at)
        context = Context(now=datetime.now(UTC), actor=self._actor, ids=self._ids)
        try:
            events = decide(state, command, context)
        except Rejected as exc:
            log.info(
                "project_command_rejected",
                command=command.type,
                project_id=command.project_id,
                why=exc.reason,
            )
            return  # the refusal is final; the command stays in the log as the record of the attempt
        try:
            await self._conn.log.append_all(events, at)
        except bus.ConcurrencyConflict as exc:
            raise bus.Retry(f"project {command.project_id} changed meanwhile", delay=0.1) from exc

    async def _load(self, subject: str, project_id: str, at: bus.Position) -> ProjectState:
        if at.seq == 0:
            return ProjectState(project_id=project_id)
        events = [decode_event(record.data) async for record in self._conn.log.read(subject)]
        return fold(project_id, events)  # type: ignore[arg-type]  # a project subject holds project events
