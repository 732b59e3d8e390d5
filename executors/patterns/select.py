"""Which patterns a run's prompt carries: named ones, its reference run's, and automatically chosen ones.

Named patterns and the reference run's pattern are read from the log (folded), so they are exact; a
missing or retired one makes the run an invalid request. Automatic selection asks the projectors for
the active patterns of the run's project and task type (`list_patterns` over NATS), ranks them by text
relevance to the instructions (BM25) times measured success ((succeeded + 1) / (finished + 2)), and
takes the best `auto_max` with any relevance at all. When no projector answers, it selects none.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import structlog

import bus
from schemas import StartRun, decode_event, pattern_id_for, subjects
from schemas.pattern import Content
from schemas.pattern_state import PatternState, PatternStatus, fold
from schemas.queries import ListPatterns

log = structlog.get_logger(__name__)

_WORD = re.compile(r"[a-z0-9][a-z0-9_.\-]+")
_STOP = frozenset("the and for with that this from into then than are was were use using all any its".split())  # noqa: SIM905
_K1, _B = 1.2, 0.75


@dataclass(frozen=True, slots=True)
class Chosen:
    pattern_id: str
    version: int
    content: Content
    selected_by: Literal["explicit", "reference", "auto"]
    score: float = 0.0


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A `list_patterns` row, the fields ranking needs."""

    pattern_id: str
    name: str | None = None
    goal: str | None = None
    summary: str | None = None
    steps: str | None = None
    finished: int | None = 0
    succeeded: int | None = 0


class _Page(msgspec.Struct, frozen=True):
    items: list[Candidate]


class _Reply(msgspec.Struct, frozen=True):
    ok: bool
    data: _Page | None = None
    error: Any = None


_reply = msgspec.json.Decoder(_Reply)


async def choose(
    conn: bus.Connection, command: StartRun, *, auto_max: int, within: float
) -> list[Chosen] | str:
    """The patterns for `command`, or why the request cannot be served."""
    chosen: list[Chosen] = []
    named = [(pid, "explicit") for pid in command.pattern_ids]
    if command.reference_run_id is not None:
        named.append((pattern_id_for(command.reference_run_id), "reference"))
    for pattern_id, how in dict(named).items():
        state = await load(conn, command.tenant, pattern_id)
        if state.current is None or state.status is not PatternStatus.ACTIVE:
            return _why_not(pattern_id, how, state, command)
        chosen.append(Chosen(pattern_id, state.version, state.current.content, how))  # type: ignore[arg-type]
    if command.auto_patterns:
        chosen += await _auto(conn, command, {c.pattern_id for c in chosen}, auto_max, within)
    return chosen


async def load(conn: bus.Connection, tenant: str, pattern_id: str) -> PatternState:
    """The pattern as its events say, folded from the log."""
    subject = subjects.events(tenant, "pattern", pattern_id)
    events = [decode_event(record.data) async for record in conn.log.read(subject)]
    return fold(pattern_id, events)  # type: ignore[arg-type]  # a pattern subject holds pattern events


def rank(instructions: str, candidates: Sequence[Candidate]) -> list[tuple[float, Candidate]]:
    """Candidates with a positive score, best first (ties by id, so the order is deterministic)."""
    query = set(_tokens(instructions))
    documents = [_tokens(" ".join(filter(None, (c.name, c.goal, c.summary, c.steps)))) for c in candidates]
    if not query or not documents:
        return []
    average = sum(map(len, documents)) / len(documents) or 1.0
    frequency = Counter(term for doc in documents for term in set(doc))
    scored = []
    for candidate, doc in zip(candidates, documents, strict=True):
        relevance = _bm25(query, doc, frequency, len(documents), average)
        success = ((candidate.succeeded or 0) + 1) / ((candidate.finished or 0) + 2)
        if relevance > 0:
            scored.append((round(relevance * success, 6), candidate))
    return sorted(scored, key=lambda pair: (-pair[0], pair[1].pattern_id))


async def _auto(
    conn: bus.Connection, command: StartRun, taken: set[str], most: int, within: float
) -> list[Chosen]:
    candidates = await _candidates(conn, command, within)
    chosen: list[Chosen] = []
    for score, candidate in rank(command.instructions, [c for c in candidates if c.pattern_id not in taken]):
        state = await load(conn, command.tenant, candidate.pattern_id)
        if state.current is not None and state.status is PatternStatus.ACTIVE:
            chosen.append(Chosen(candidate.pattern_id, state.version, state.current.content, "auto", score))
        if len(chosen) >= most:
            break
    return chosen


async def _candidates(conn: bus.Connection, command: StartRun, within: float) -> list[Candidate]:
    params = ListPatterns(
        project_id=command.project_id, status="active", task_type=command.task_type, limit=500
    )
    body = msgspec.json.encode({"params": params, "wait_ms": int(within * 1000)})
    try:
        raw = await bus.request(conn, f"swarmq.{command.tenant}.list_patterns", body, within=within)
        reply = _reply.decode(raw)
    except (bus.BusError, msgspec.MsgspecError) as exc:
        log.warning("pattern_selection_unavailable", run_id=command.run_id, problem=str(exc)[:200])
        return []
    if not reply.ok or reply.data is None:
        log.warning("pattern_selection_unavailable", run_id=command.run_id, problem=str(reply.error)[:200])
        return []
    return reply.data.items


def _why_not(pattern_id: str, how: str, state: PatternState, command: StartRun) -> str:
    if how == "reference":
        source = command.reference_run_id
        if state.current is None:
            return (
                f"the reference run {source} has no pattern (it did not succeed, or it is not extracted yet)"
            )
        return f"the reference run's pattern {pattern_id} is retired; restore it or leave it out"
    if state.current is None:
        return f"pattern {pattern_id} does not exist"
    return f"pattern {pattern_id} is retired; restore it or leave it out"


def _tokens(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if len(word) > 2 and word not in _STOP]


def _bm25(query: set[str], doc: list[str], frequency: Counter[str], total: int, average: float) -> float:
    counts = Counter(doc)
    score = 0.0
    for term in query & counts.keys():
        idf = math.log(1 + (total - frequency[term] + 0.5) / (frequency[term] + 0.5))
        tf = counts[term]
        score += idf * tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * len(doc) / average))
    return score
