"""`swarm audit verify` checks every digest and hash-chain link; `swarm audit replay` prints the log."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import msgspec

import bus
from schemas import InvalidMessage, chain, decode, subjects
from schemas.run import RunEvent
from swarm import render


async def verify(
    settings: bus.Settings, tenant: str | None, run_id: str | None, after_seq: int, as_json: bool
) -> int:
    """Return 0 when the range verifies, 1 at the first break (which is printed)."""
    subject = _scope(tenant, run_id)
    verifier = chain.Verifier(anchored=after_seq == 0)
    async with bus.connect(settings, name="swarm-audit") as conn:
        async for record in conn.log.read(subject, after_seq=after_seq):
            verifier.add(record.entry())
    report = verifier.report()
    if as_json:
        print(json.dumps(msgspec.to_builtins(report) | {"ok": report.ok}))
    else:
        print(_describe(subject, report))
    return 0 if report.ok else 1


async def replay(
    settings: bus.Settings,
    tenant: str | None,
    run_id: str | None,
    seqs: tuple[int, int | None],
    *,
    as_json: bool,
    pace: float | None = None,
    max_gap: float = 10.0,
) -> int:
    """Print the messages of a run, a tenant or the whole log in order, optionally at their pace.

    `seqs` is (after, until): the messages after the first and up to the second (None: the end).
    With `pace`, waits between messages as long as they were apart in the log, divided by `pace`
    (never more than `max_gap` seconds).
    """
    after, until = seqs
    previous: datetime | None = None
    async with bus.connect(settings, name="swarm-audit") as conn:
        async for record in conn.log.read(_scope(tenant, run_id), after_seq=after):
            if until is not None and record.seq > until:
                break
            if pace and previous and record.time:
                await asyncio.sleep(min(max_gap, (record.time - previous).total_seconds() / pace))
            previous = record.time or previous
            print(_replayed(record, as_json), flush=True)
    return 0


def _replayed(record: bus.Record, as_json: bool) -> str:
    try:
        message = decode(record.data)
    except InvalidMessage as exc:
        if as_json:
            raw = record.data.decode(errors="replace")
            return json.dumps(
                {"seq": record.seq, "subject": record.subject, "raw": raw, "problem": exc.detail}
            )
        return f"{record.seq:>8}  {record.subject}  UNDECODABLE: {exc.detail}"
    if as_json:
        return json.dumps(
            {"seq": record.seq, "subject": record.subject, "message": msgspec.to_builtins(message)}
        )
    text = render.line(message) if isinstance(message, RunEvent) else None
    stamp = message.at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{record.seq:>8}  {stamp}  {message.type:<24} {text or _aggregate(record.subject)}"


def _aggregate(subject: str) -> str:
    parsed = subjects.parse(subject)
    return f"{parsed.tenant} {parsed.aggregate} {parsed.id}" + (f" {parsed.verb}" if parsed.verb else "")


def _scope(tenant: str | None, run_id: str | None) -> str:
    if tenant and run_id:
        return subjects.events(tenant, "run", run_id)
    return subjects.tenant_log(tenant) if tenant else ">"


def _describe(subject: str, report: chain.Report) -> str:
    if report.checked == 0:
        return f"{subject}: no messages"
    span = f"{report.checked} messages, sequences {report.first_seq}..{report.last_seq}"
    if report.first_break is None:
        return f"{subject}: OK, {span}, {len(report.heads)} event chains"
    found = report.first_break
    return (
        f"{subject}: BROKEN at sequence {found.seq} ({found.subject}): {found.problem}, "
        f"expected {found.expected}, found {found.actual}; checked {span}"
    )
