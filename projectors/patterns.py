"""Pattern events into the `patterns`, `pattern_versions` and `pattern_uses` rows (in memory, no DuckDB).

`patterns` holds each pattern's current version, upserted whole; `pattern_versions` every version and
`pattern_uses` every use, appended and keyed by the log. The analytics over them are the view
`pattern_stats` (`STATS_VIEW`), computed from the runs so it is always consistent with them.
"""

from __future__ import annotations

from typing import assert_never

import msgspec

from projectors.rows import PatternRow, PatternUseRow, PatternVersionRow, Row
from schemas import PatternApplied, PatternEdited, PatternExtracted, PatternRestored, PatternRetired
from schemas.pattern import Content, PatternEvents


def apply(row: PatternRow, seq: int, event: PatternEvents, appended: list[Row]) -> None:
    """Fold one pattern event into its row; a new version also goes to `appended`."""
    match event:
        case PatternExtracted():
            provenance = event.provenance
            row.project_id, row.task_type, row.created_at, row.created_by = (
                event.project_id, event.task_type, event.at, event.actor,
            )  # fmt: skip
            row.source_run_id, row.extractor_version = provenance.run_id, provenance.extractor_version
            row.source_first_seq, row.source_last_seq = provenance.first_seq, provenance.last_seq
            row.refinement, row.refinement_detail = event.refinement, event.refinement_detail
            _version(row, seq, event, 1, event.content, provenance.content_hash, appended)
        case PatternEdited():
            _version(row, seq, event, event.version, event.content, event.content_hash, appended)
        case PatternRetired():
            row.status, row.retired_at = "retired", event.at
        case PatternRestored():
            row.status, row.retired_at = "active", None
        case _:
            assert_never(event)
    row.updated_at, row.last_seq = event.at, seq


def uses(seq: int, event: PatternApplied) -> list[PatternUseRow]:
    return [
        PatternUseRow(
            use_id=f"{seq}.{index}", seq=seq, tenant=event.tenant, pattern_id=used.pattern_id,
            version=used.version, run_id=event.run_id, selected_by=used.selected_by, score=used.score,
            occurred_at=event.at,
        )
        for index, used in enumerate(event.patterns)
    ]  # fmt: skip


def _version(
    row: PatternRow,
    seq: int,
    event: PatternEvents,
    version: int,
    content: Content,
    digest: str,
    out: list[Row],
) -> None:
    steps = msgspec.json.encode(content.steps).decode()
    variables = msgspec.json.encode(content.variables).decode()
    row.name, row.goal, row.summary, row.version = content.name, content.goal, content.summary, version
    row.steps, row.variables, row.content_hash = steps, variables, digest
    out.append(
        PatternVersionRow(
            seq=seq, tenant=event.tenant, pattern_id=row.pattern_id, version=version, name=content.name,
            summary=content.summary, steps=steps, variables=variables, content_hash=digest,
            created_by=event.actor, created_at=event.at,
        )
    )  # fmt: skip


MIN_RUNS = 5  # finished runs that used a pattern before a negative uplift flags it
_TERMINAL = "('succeeded', 'failed', 'cancelled', 'timed_out')"


def stats_view(min_runs: int) -> str:
    """Per pattern: its uses and their outcomes against comparable runs (same tenant, project and task
    type) that did not use it. Medians are over succeeded runs; `uplift` is the difference in success
    rate; `flagged` marks a pattern for retirement once `min_runs` finished runs used it and uplift < 0.
    """
    return f"""
WITH used AS (
  SELECT DISTINCT u.tenant, u.pattern_id, r.run_id, r.status, r.duration_ms,
         r.tokens_in + r.tokens_out AS tokens
  FROM pattern_uses u JOIN runs r ON r.tenant = u.tenant AND r.run_id = u.run_id),
mine AS (
  SELECT p.tenant, p.pattern_id, count(u.run_id) AS uses,
    count(u.run_id) FILTER (WHERE u.status IN {_TERMINAL}) AS finished,
    count(u.run_id) FILTER (WHERE u.status = 'succeeded') AS succeeded,
    median(u.duration_ms) FILTER (WHERE u.status = 'succeeded') AS median_duration_ms,
    median(u.tokens) FILTER (WHERE u.status = 'succeeded') AS median_tokens
  FROM patterns p LEFT JOIN used u ON u.tenant = p.tenant AND u.pattern_id = p.pattern_id
  GROUP BY p.tenant, p.pattern_id),
others AS (
  SELECT p.tenant, p.pattern_id, count(r.run_id) AS finished,
    count(r.run_id) FILTER (WHERE r.status = 'succeeded') AS succeeded,
    median(r.duration_ms) FILTER (WHERE r.status = 'succeeded') AS median_duration_ms,
    median(r.tokens_in + r.tokens_out) FILTER (WHERE r.status = 'succeeded') AS median_tokens
  FROM patterns p JOIN runs r ON r.tenant = p.tenant AND r.project_id = p.project_id
    AND r.task_type = p.task_type AND r.status IN {_TERMINAL}
  WHERE NOT EXISTS (SELECT 1 FROM pattern_uses u
                    WHERE u.tenant = r.tenant AND u.run_id = r.run_id AND u.pattern_id = p.pattern_id)
  GROUP BY p.tenant, p.pattern_id),
last AS (SELECT tenant, pattern_id, max(occurred_at) AS last_used_at FROM pattern_uses GROUP BY ALL),
rates AS (
  SELECT m.tenant, m.pattern_id, m.uses, m.finished, m.succeeded,
    m.succeeded / nullif(m.finished, 0) AS success_rate,
    m.median_duration_ms, m.median_tokens,
    coalesce(o.finished, 0) AS baseline_runs,
    o.succeeded / nullif(o.finished, 0) AS baseline_success_rate,
    o.median_duration_ms AS baseline_median_duration_ms, o.median_tokens AS baseline_median_tokens,
    l.last_used_at
  FROM mine m LEFT JOIN others o ON o.tenant = m.tenant AND o.pattern_id = m.pattern_id
  LEFT JOIN last l ON l.tenant = m.tenant AND l.pattern_id = m.pattern_id)
SELECT *, success_rate - baseline_success_rate AS uplift,
  baseline_median_duration_ms - median_duration_ms AS duration_saved_ms,
  baseline_median_tokens - median_tokens AS tokens_saved,
  coalesce(finished >= {int(min_runs)} AND success_rate - baseline_success_rate < 0, false) AS flagged
FROM rates"""  # noqa: S608 - constants and an int only
