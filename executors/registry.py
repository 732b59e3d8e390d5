"""The registry handler: project and API key commands in, their events out (load, decide, append).

Two durable work queues shared by every replica (`registry` for projects, `registry-keys` for keys);
the expected subject sequence of each append makes two replicas deciding on the same aggregate at once
safe (the loser reloads and decides again).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog

import bus
from schemas import Context, IdSource, Rejected, decode_command, decode_event, key_state, subjects
from schemas.key import CreateKey, KeyCommand, KeyEvents, RevokeKey
from schemas.project import ArchiveProject, CreateProject, UpdateProject
from schemas.project_state import ProjectState, decide, fold

log = structlog.get_logger(__name__)

QUEUE = "registry"
KEY_QUEUE = "registry-keys"
PROJECT_COMMANDS = "swarm.*.cmd.project.>"
KEY_COMMANDS = "swarm.*.cmd.key.>"


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
        self.key_worker = bus.Worker(
            conn.js,
            conn.settings.stream,
            bus.Queue(durable=KEY_QUEUE, subject=KEY_COMMANDS, ack_wait=10.0),
            self._handle_key,
            concurrency=concurrency,
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.worker.run())
            tasks.create_task(self.key_worker.run())

    async def shutdown(self, grace: float = 5.0) -> None:
        await asyncio.gather(self.worker.shutdown(grace), self.key_worker.shutdown(grace))

    def _context(self) -> Context:
        return Context(now=datetime.now(UTC), actor=self._actor, ids=self._ids)

    async def _handle(self, delivery: bus.Delivery) -> None:
        command = decode_command(delivery.data)
        if not isinstance(command, CreateProject | UpdateProject | ArchiveProject):
            raise bus.Reject(f"{command.type} is not a project command")
        subject = subjects.events(command.tenant, "project", command.project_id)
        at = await self._conn.log.position(subject)
        state = await self._load(subject, command.project_id, at)
        try:
            events = decide(state, command, self._context())
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

    async def _handle_key(self, delivery: bus.Delivery) -> None:
        command = decode_command(delivery.data)
        if not isinstance(command, CreateKey | RevokeKey):
            raise bus.Reject(f"{command.type} is not a key command")
        try:
            await handle_key(self._conn, command, self._context())
        except bus.ConcurrencyConflict as exc:
            raise bus.Retry(f"key {command.key_id} changed meanwhile", delay=0.1) from exc

    async def _load(self, subject: str, project_id: str, at: bus.Position) -> ProjectState:
        if at.seq == 0:
            return ProjectState(project_id=project_id)
        events = [decode_event(record.data) async for record in self._conn.log.read(subject)]
        return fold(project_id, events)  # type: ignore[arg-type]  # a project subject holds project events


async def handle_key(conn: bus.Connection, command: KeyCommand, context: Context) -> list[KeyEvents]:
    """Load the key, decide, append; return the events appended (none when refused or already done).

    Raises `bus.ConcurrencyConflict` when another writer changed the key meanwhile. Shared by the
    registry queue and `swarm keys bootstrap`, which has no registry to wait for.
    """
    at, state = await load_key(conn, command.tenant, command.key_id)
    try:
        events = key_state.decide(state, command, context)
    except Rejected as exc:
        log.info("key_command_rejected", command=command.type, key_id=command.key_id, why=exc.reason)
        return []
    await conn.log.append_all(events, at)
    if events:
        log.info("key_changed", change=events[0].type, key_id=command.key_id, tenant=command.tenant)
    return events


async def load_key(conn: bus.Connection, tenant: str, key_id: str) -> tuple[bus.Position, key_state.KeyState]:
    """A key's position in the log and its state folded from its events."""
    subject = subjects.events(tenant, "key", key_id)
    at = await conn.log.position(subject)
    history = [decode_event(record.data) async for record in conn.log.read(subject)] if at.seq else []
    return at, key_state.fold(key_id, history)  # type: ignore[arg-type]  # a key subject holds key events
