"""`swarm audit verify`: read the log in order and check every digest and hash-chain link."""

from __future__ import annotations

import json

import msgspec

import bus
from schemas import chain, subjects


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
