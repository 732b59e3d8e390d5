"""The run executor process: takes run-start commands from a shared work queue and runs them.

Any number of replicas share the durable consumer `executors`, so each start command goes to one
of them; a replica that dies stops heartbeating and its command is redelivered to another, which
decides from the run's history (`schemas.run_state.decide`): a new attempt, or `executor_lost`.

Cancellation: every replica follows the cancel commands as they arrive. A run it is executing is
stopped; a run still queued is cancelled at once (appended at the run's first position, so it
fences any start). A start command also checks for a cancel issued before it was taken.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog

import bus
from executors.patterns import Chosen, choose, render_all
from executors.run_log import Limits, RunLog, Stop
from executors.runner import ARCHIVE, Origin, Run, Services
from executors.settings import CODEX_VERSION
from schemas import (
    AnyEvent,
    AppliedPattern,
    ArtifactStored,
    CancelRun,
    Context,
    ExtractPattern,
    FailureReason,
    IdSource,
    IllegalTransition,
    InvalidMessage,
    Kind,
    Rejected,
    RunFailed,
    RunStarted,
    StartRun,
    decode_command,
    decode_event,
    pattern_id_for,
    subjects,
    task_types,
)
from schemas.project_state import ProjectStatus
from schemas.project_state import fold as fold_project
from schemas.run_state import ExecutorInfo, RetryPolicy, RunState, RunStatus, decide
from schemas.run_state import fold as fold_run

log = structlog.get_logger(__name__)

CREATING = 30.0  # seconds a run waits for its project's create command to take effect

QUEUE = "executors"
STARTS = "swarm.*.cmd.run.*.start"
CANCELS = "swarm.*.cmd.run.*.cancel"


class Executor:
    """`run()` until `shutdown()`; runs in flight get `grace` seconds to finish, then are handed back."""

    def __init__(self, services: Services, executor_id: str | None = None) -> None:
        self._services = services
        self._conn = services.conn
        self._settings = services.settings
        self._ids = IdSource()
        self.executor_id = executor_id or self._ids.new(Kind.EXECUTOR)
        self._active: dict[str, Run | None] = {}  # None: being started
        self._pending_cancels: dict[str, CancelRun] = {}
        self._worker = bus.Worker(
            self._conn.js,
            self._conn.settings.stream,
            bus.Queue(
                durable=QUEUE,
                subject=STARTS,
                ack_wait=self._settings.ack_wait,
                max_deliver=self._settings.max_deliver,
            ),
            self._handle,
            concurrency=self._settings.concurrency,
        )
        self._ready = asyncio.Event()

    @property
    def info(self) -> ExecutorInfo:
        backend = self._services.backend
        return ExecutorInfo(
            executor_id=self.executor_id,
            sandbox=backend.name,
            sandbox_version=backend.version[:2000],
            codex_version=CODEX_VERSION,
        )

    async def run(self) -> None:
        after = await self._conn.log.end()
        async with asyncio.TaskGroup() as group:
            cancels = group.create_task(self._follow_cancels(after))
            self._ready.set()
            log.info("executor_started", executor_id=self.executor_id, sandbox=self._services.backend.name)
            try:
                await self._worker.run()
            finally:
                cancels.cancel()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def shutdown(self, grace: float = 30.0) -> None:
        await self._worker.shutdown(grace)

    # Start commands

    async def _handle(self, delivery: bus.Delivery) -> None:
        command = decode_command(delivery.data)
        if not isinstance(command, StartRun):
            raise bus.Reject(f"{command.type} is not a run start")
        structlog.contextvars.bind_contextvars(run_id=command.run_id, attempt=delivery.attempt)
        self._active[command.run_id] = None  # from here on, a cancel is remembered
        try:
            await self._start(command)
        finally:
            self._active.pop(command.run_id, None)
            self._pending_cancels.pop(command.run_id, None)
            structlog.contextvars.unbind_contextvars("run_id", "attempt")

    async def _start(self, command: StartRun) -> None:
        state, at = await self._load(command)
        if state.status.terminal:
            log.info("run_already_ended", status=str(state.status))
            if state.status is RunStatus.SUCCEEDED:  # its extraction may not have been asked for yet
                await self._ask_extraction(command)
            return
        if state.status is RunStatus.RUNNING:  # its executor was lost: clear what it left behind
            await self._services.backend.discard(command.run_id)
        cancel = await self._cancel_for(command)
        context = Context(now=datetime.now(UTC), actor=self.executor_id, ids=self._ids)
        if cancel is not None:
            await self._append_decided(decide(state, cancel, context), at)
            return
        origin = await self._origin(command)
        if isinstance(origin, str):  # the request cannot be served: it fails without a sandbox
            await self._append_decided([_invalid(command, context, origin)], at)
            return
        chosen = await self._patterns(command)
        if isinstance(chosen, str):
            suggestion = "check the run's task type and patterns"
            await self._append_decided([_invalid(command, context, chosen, suggestion)], at)
            return
        policy = RetryPolicy(
            max_attempts=self._settings.max_attempts,
            retry_after_side_effects=self._settings.retry_after_side_effects,
        )
        [first] = decide(state, command, context, self.info, policy)
        at = await self._append_decided([first], at)
        if isinstance(first, RunStarted):
            await self._execute(command, at, origin, chosen)

    async def _execute(
        self, command: StartRun, at: bus.Position, origin: Origin, chosen: list[Chosen]
    ) -> None:
        run: Run | None = None

        def stop(why: Stop) -> None:
            if run is not None:
                run.stop(why)

        limits = command.limits
        runs = RunLog(
            self._conn.log,
            command,
            at,
            actor=self.executor_id,
            limits=Limits(
                max_events=limits.max_events or self._settings.max_events,
                max_bytes=limits.max_bytes or self._settings.max_bytes,
            ),
            on_limit=stop,
            ids=self._ids,
        )
        directory = Path(self._settings.work_dir) / command.run_id
        spec = task_types.get(command.task_type)
        prompt = spec.prompt(
            command.instructions, render_all([(c.pattern_id, c.version, c.content) for c in chosen])
        )
        applied = [
            AppliedPattern(
                pattern_id=c.pattern_id, version=c.version, selected_by=c.selected_by, score=c.score
            )
            for c in chosen
        ]
        run = Run(self._services, command, runs, directory, prompt=prompt, applied=applied)
        self._active[command.run_id] = run
        pending = self._pending_cancels.pop(command.run_id, None)
        if pending is not None:
            run.stop(_cancel_stop(pending))
        await run.execute(origin)
        if run.succeeded:
            await self._ask_extraction(command)

    async def _append_decided(self, events: Sequence[AnyEvent], at: bus.Position) -> bus.Position:
        try:
            return await self._conn.log.append_all(events, at)
        except bus.ConcurrencyConflict as exc:
            raise bus.Retry(f"the run changed while it was being started: {exc}", delay=0.2) from exc

    async def _load(self, command: StartRun) -> tuple[RunState, bus.Position]:
        subject = subjects.events(command.tenant, "run", command.run_id)
        at = await self._conn.log.position(subject)
        if at.seq == 0:
            return RunState(run_id=command.run_id), at
        events = [decode_event(record.data) async for record in self._conn.log.read(subject)]
        try:
            state = fold_run(command.run_id, events)  # type: ignore[arg-type]  # a run subject
        except IllegalTransition as exc:
            raise bus.Reject(f"the run's history does not fold: {exc}") from exc
        return state, await self._conn.log.position(subject)

    async def _origin(self, command: StartRun) -> Origin | str:
        """The run's source, or why it has none (the run then fails as an invalid request)."""
        project_subject = subjects.events(command.tenant, "project", command.project_id)
        events = [decode_event(r.data) async for r in self._conn.log.read(project_subject)]
        project = fold_project(command.project_id, events)  # type: ignore[arg-type]  # a project subject
        if project.status is not ProjectStatus.ACTIVE or project.source is None:
            if not events and await self._being_created(command):
                # Project and run commands are taken by different workers: the run's may come first.
                raise bus.Retry(f"project {command.project_id} is still being created", delay=0.2)
            return f"project {command.project_id} does not exist or is archived"
        if command.from_run_id is None:
            return Origin(source=project.source)
        return await self._archive_origin(command)

    async def _being_created(self, command: StartRun) -> bool:
        """Whether the run's project has a create command in the log, sent in the last `CREATING`
        seconds, whose event has yet to follow (an older one was refused, and stays so)."""
        subject = subjects.commands(command.tenant, "project", command.project_id, "create")
        create = await self._conn.log.last(subject)
        if create is None:
            return False
        return (datetime.now(UTC) - decode_command(create.data).at).total_seconds() < CREATING

    async def _archive_origin(self, command: StartRun) -> Origin | str:
        source_run = command.from_run_id
        assert source_run is not None
        start = await self._conn.log.last(subjects.commands(command.tenant, "run", source_run, "start"))
        if start is None:
            return f"the source run {source_run} does not exist"
        earlier = decode_command(start.data)
        if not isinstance(earlier, StartRun) or earlier.project_id != command.project_id:
            return f"the source run {source_run} belongs to another project"
        subject = subjects.events(command.tenant, "run", source_run)
        archive = None
        async for record in self._conn.log.read(subject):
            event = decode_event(record.data)
            if isinstance(event, ArtifactStored) and event.name == ARCHIVE:
                archive = event.blob
        if archive is None:
            return f"the source run {source_run} has no stored workspace"
        return Origin(archive=await self._conn.blobs.get(archive.sha256))

    # Patterns

    async def _patterns(self, command: StartRun) -> list[Chosen] | str:
        """The patterns the run's prompt carries, or why the request cannot be served."""
        if command.task_type not in task_types.catalogue():
            return task_types.UnknownTaskType(command.task_type).detail
        settings = self._settings.patterns
        return await choose(self._conn, command, auto_max=settings.auto_max, within=settings.query_timeout)

    async def _ask_extraction(self, command: StartRun) -> None:
        """Send `pattern.extract` for a succeeded run; its idempotency key makes a repeat harmless."""
        if not self._settings.patterns.extract:
            return
        extract = ExtractPattern(
            id=self._ids.new(Kind.COMMAND),
            at=datetime.now(UTC),
            tenant=command.tenant,
            actor=self.executor_id,
            pattern_id=pattern_id_for(command.run_id),
            run_id=command.run_id,
        )
        try:
            await self._conn.log.send(extract, idempotency_key=f"extract-{command.run_id}")
        except bus.BusError as exc:  # the run's outcome stands; a redelivered start asks again
            log.warning("pattern_extraction_not_requested", run_id=command.run_id, problem=str(exc))

    # Cancellation

    async def _cancel_for(self, command: StartRun) -> CancelRun | None:
        subject = subjects.commands(command.tenant, "run", command.run_id, "cancel")
        record = await self._conn.log.last(subject)
        if record is None:
            return None
        cancel = decode_command(record.data)
        return cancel if isinstance(cancel, CancelRun) else None

    async def _follow_cancels(self, after: int) -> None:
        async for record in self._conn.log.follow(CANCELS, after_seq=after):
            try:
                cancel = decode_command(record.data)
            except InvalidMessage as exc:
                log.warning("cancel_undecodable", seq=record.seq, problem=exc.detail)
                continue
            if isinstance(cancel, CancelRun):
                await self._cancel(cancel)

    async def _cancel(self, cancel: CancelRun) -> None:
        if cancel.run_id in self._active:
            run = self._active[cancel.run_id]
            if run is None:
                self._pending_cancels[cancel.run_id] = cancel
            else:
                run.stop(_cancel_stop(cancel))
            return
        await self._cancel_queued(cancel)

    async def _cancel_queued(self, cancel: CancelRun) -> None:
        """A run no executor has started yet is cancelled now; every replica tries, one wins."""
        subject = subjects.events(cancel.tenant, "run", cancel.run_id)
        if (await self._conn.log.position(subject)).seq != 0:
            return  # started somewhere: its executor stops it
        context = Context(now=datetime.now(UTC), actor=self.executor_id, ids=self._ids)
        try:
            events = decide(RunState(run_id=cancel.run_id, status=RunStatus.PENDING), cancel, context)
            await self._conn.log.append_all(events, bus.START)
            log.info("queued_run_cancelled", run_id=cancel.run_id, by=cancel.actor)
        except (bus.ConcurrencyConflict, Rejected):
            pass  # another replica cancelled it, or it started meanwhile


def _cancel_stop(cancel: CancelRun) -> Stop:
    return Stop("cancelled", "cancelled on request", actor=cancel.actor, reason=cancel.reason)


def _invalid(
    command: StartRun,
    context: Context,
    detail: str,
    suggestion: str = "check the run's project and source run",
) -> RunFailed:
    return RunFailed(
        **context.envelope(command),
        run_id=command.run_id,
        reason=FailureReason.INVALID_REQUEST,
        detail=detail,
        suggestion=suggestion,
    )
