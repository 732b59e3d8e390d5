"""One run's side of the log: its events appended in order, fenced, counted against the run's limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import structlog

import bus
from schemas import IdSource, Kind, LimitWarning, StartRun
from schemas.run import RunEvents

log = structlog.get_logger(__name__)

StopKind = Literal["cancelled", "deadline", "idle", "budget", "limit", "sandbox"]


class ExecutorError(Exception):
    """The root of the executor's errors."""


class Fenced(ExecutorError):
    """Another writer appended to the run: this executor lost it and must stop without writing more."""

    def __init__(self, run_id: str, expected: int, actual: int | None) -> None:
        super().__init__(f"run {run_id} moved on without this executor (expected {expected}, found {actual})")
        self.run_id, self.expected, self.actual = run_id, expected, actual


@dataclass(frozen=True, slots=True)
class Stop:
    """Why a run is being stopped before Codex ended by itself."""

    kind: StopKind
    detail: str = ""
    actor: str = ""  # who cancelled
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Limits:
    max_events: int
    max_bytes: int
    soft: float = 0.8


class RunLog:
    """Appends one run's events at its position, one at a time, in the order they are given.

    The expected subject sequence of every append fences a zombie: when another executor took the run
    over, the append raises `Fenced`. Crossing a limit's soft mark appends one `LimitWarning`; crossing
    the hard mark calls `on_limit` once (the run is then stopped) but never refuses an event, so the
    run can still end with its artifacts and terminal event.
    """

    def __init__(
        self,
        log_: bus.Log,
        command: StartRun,
        at: bus.Position,
        *,
        actor: str,
        limits: Limits,
        on_limit: Callable[[Stop], None],
        ids: IdSource | None = None,
    ) -> None:
        self._log = log_
        self._command = command
        self._at = at
        self._actor = actor
        self._limits = limits
        self._on_limit = on_limit
        self._ids = ids or IdSource()
        self._lock = asyncio.Lock()
        self._warned: set[str] = set()
        self._exceeded = False
        self.events = 0
        self.bytes = 0

    @property
    def position(self) -> bus.Position:
        return self._at

    def envelope(self) -> dict[str, Any]:
        """The envelope of a new event answering the run's start command, stamped now."""
        return {
            "id": self._ids.new(Kind.EVENT),
            "at": datetime.now(UTC),
            "tenant": self._command.tenant,
            "actor": self._actor,
            "causation_id": self._command.id,
            "run_id": self._command.run_id,
        }

    async def append(self, event: RunEvents) -> None:
        async with self._lock:
            await self._append(event)
            await self._count(len(msgspec.json.encode(event)))

    async def count_bytes(self, size: int) -> None:
        """Count bytes stored outside the events (artifacts, bodies) against the byte limit."""
        async with self._lock:
            await self._count(0, size, events=0)

    async def _append(self, event: RunEvents) -> None:
        try:
            self._at = await self._log.append(event, self._at)
        except bus.ConcurrencyConflict as exc:
            raise Fenced(self._command.run_id, exc.expected, exc.actual) from exc

    async def _count(self, event_bytes: int, extra: int = 0, *, events: int = 1) -> None:
        self.events += events
        self.bytes += event_bytes + extra
        await self._check("events", self.events, self._limits.max_events)
        await self._check("bytes", self.bytes, self._limits.max_bytes)

    async def _check(self, limit: Literal["events", "bytes"], used: int, hard: int) -> None:
        soft = hard * self._limits.soft
        if used >= soft and limit not in self._warned:
            self._warned.add(limit)
            warning = LimitWarning(
                **self.envelope(), limit=limit, used=used, soft_limit=soft, hard_limit=hard
            )
            await self._append(warning)
            self.events += 1
        if used >= hard and not self._exceeded:
            self._exceeded = True
            log.warning("run_limit_exceeded", run_id=self._command.run_id, limit=limit, used=used)
            self._on_limit(Stop("limit", f"the run reached its {limit} limit ({used} of {hard})"))
