"""The pattern handler: pattern commands in (`patterns` work queue), pattern events out.

`pattern.extract` is sent by the executor when a run succeeds. The handler reads the run's start command
and events, builds the deterministic baseline, lets the model refine it when configured, scrubs it and
appends `pattern.extracted` at the pattern's first position. The pattern id derives from the run, so a
redelivered or repeated extraction finds the pattern there (or loses the append race) and does nothing.
Edit, retire and restore are load, decide, append.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog

import bus
from executors.patterns import baseline, redact
from executors.patterns.refine import Outcome, Refiner
from executors.patterns.select import load
from executors.settings import Settings
from schemas import (
    Context,
    EditPattern,
    ExtractPattern,
    IdSource,
    Provenance,
    Rejected,
    RestorePattern,
    RetirePattern,
    RunSucceeded,
    StartRun,
    decode_command,
    decode_event,
    subjects,
    task_types,
)
from schemas.pattern_state import Extraction, PatternStatus, decide
from schemas.run import RunEvents

log = structlog.get_logger(__name__)

QUEUE = "patterns"
COMMANDS = "swarm.*.cmd.pattern.>"
EXTRACTOR_VERSION = f"baseline-{baseline.VERSION}"


class Extractor:
    """`run()` until `shutdown()`; one replica per executor process, any number of them."""

    def __init__(self, conn: bus.Connection, settings: Settings, actor: str = "sys_patterns") -> None:
        self._conn = conn
        self._actor = actor
        self._ids = IdSource()
        upstream, patterns = settings.upstream, settings.patterns
        self._refiner = (
            Refiner(
                upstream.base_url, upstream.api_key, patterns.model or upstream.model, patterns.refine_timeout
            )
            if patterns.refine and upstream.base_url
            else None
        )
        self.worker = bus.Worker(
            conn.js,
            conn.settings.stream,
            bus.Queue(durable=QUEUE, subject=COMMANDS, ack_wait=max(10.0, patterns.refine_timeout / 2)),
            self._handle,
            concurrency=patterns.concurrency,
        )

    async def run(self) -> None:
        try:
            await self.worker.run()
        finally:
            if self._refiner is not None:
                await asyncio.shield(self._refiner.close())

    async def shutdown(self, grace: float = 5.0) -> None:
        await self.worker.shutdown(grace)

    async def _handle(self, delivery: bus.Delivery) -> None:
        command = decode_command(delivery.data)
        if not isinstance(command, ExtractPattern | EditPattern | RetirePattern | RestorePattern):
            raise bus.Reject(f"{command.type} is not a pattern command")
        subject = subjects.events(command.tenant, "pattern", command.pattern_id)
        at = await self._conn.log.position(subject)
        state = await load(self._conn, command.tenant, command.pattern_id)
        extraction = None
        if isinstance(command, ExtractPattern) and state.status is PatternStatus.ABSENT:
            extraction = await self._extract(command)
            if extraction is None:
                return
        context = Context(now=datetime.now(UTC), actor=self._actor, ids=self._ids)
        try:
            events = decide(state, command, context, extraction)
        except Rejected as exc:
            log.info(
                "pattern_command_rejected",
                command=command.type,
                pattern_id=command.pattern_id,
                why=exc.reason,
            )
            return
        try:
            await self._conn.log.append_all(events, at)
        except bus.ConcurrencyConflict as exc:
            if isinstance(command, ExtractPattern):
                log.info("pattern_already_extracted", pattern_id=command.pattern_id)
                return  # another replica extracted it first: done
            raise bus.Retry(f"pattern {command.pattern_id} changed meanwhile", delay=0.1) from exc
        if events:
            log.info("pattern_changed", change=events[0].type, pattern_id=command.pattern_id)

    async def _extract(self, command: ExtractPattern) -> Extraction | None:
        """The run's pattern; `None` (logged) when the run does not exist or did not succeed."""
        record = await self._conn.log.last(subjects.commands(command.tenant, "run", command.run_id, "start"))
        start = decode_command(record.data) if record is not None else None
        if not isinstance(start, StartRun):
            log.warning("pattern_source_missing", run_id=command.run_id)
            return None
        events: list[RunEvents] = []
        seqs: list[int] = []
        async for item in self._conn.log.read(subjects.events(command.tenant, "run", command.run_id)):
            events.append(decode_event(item.data))  # type: ignore[arg-type]  # a run subject
            seqs.append(item.seq)
            if isinstance(events[-1], RunSucceeded):
                break
        if not events or not isinstance(events[-1], RunSucceeded):
            log.warning("pattern_source_not_succeeded", run_id=command.run_id)
            return None
        try:
            task = task_types.get(start.task_type)
        except task_types.UnknownTaskType as exc:
            log.warning("pattern_source_task_type_unknown", run_id=command.run_id, problem=exc.detail)
            return None
        draft = redact.struct(baseline.build(start, events, what=task.name))
        outcome = Outcome(draft, "none")
        if self._refiner is not None:
            outcome = await self._refiner.refine(draft, task, command.run_id)
        content = outcome.content
        return Extraction(
            project_id=start.project_id,
            task_type=start.task_type,
            content=content,
            provenance=Provenance(
                run_id=command.run_id,
                first_seq=seqs[0],
                last_seq=seqs[-1],
                extractor_version=EXTRACTOR_VERSION + ("+model" if self._refiner is not None else ""),
                content_hash=content.digest(),
            ),
            refinement=outcome.refinement,
            refinement_detail=outcome.detail[:2000],
        )
