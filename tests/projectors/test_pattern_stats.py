"""Pattern analytics from a constructed log: uses, success, medians and uplift against comparable runs."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

import bus
import schemas
from projectors.queries import answer
from projectors.store import open_store
from schemas import (
    AppliedPattern,
    Content,
    FailureReason,
    IdSource,
    Kind,
    Message,
    PatternApplied,
    PatternEdited,
    PatternExtracted,
    Provenance,
    RunFailed,
    RunStarted,
    RunSucceeded,
    RunSummary,
    StartRun,
    Step,
    TurnCompleted,
    Usage,
    pattern_id_for,
    subjects,
)

T0 = datetime(2025, 3, 1, tzinfo=UTC)
CONTENT = Content(
    name="greet", goal="greet", summary="Greets.", steps=[Step(kind="create", text="Create it")]
)


class Log:
    def __init__(self) -> None:
        self.ids = IdSource(clock_ms=lambda: 1_740_000_000_000, entropy=random.Random(3).randbytes)
        self.records: list[bus.Record] = []
        self.project = self.ids.new(Kind.PROJECT)

    def add(self, message: Message) -> None:
        cmd = isinstance(message, schemas.CommandBase)
        subject = subjects.of_command(message) if cmd else subjects.of_event(message)  # type: ignore[arg-type]
        self.records.append(
            bus.Record(seq=len(self.records) + 1, subject=subject, data=schemas.encode(message))
        )

    def env(self, at: datetime, kind: Kind = Kind.EVENT) -> dict[str, Any]:
        return {"id": self.ids.new(kind), "at": at, "tenant": "acme", "actor": "exe_1"}

    def run(
        self,
        seconds: int,
        tokens: int,
        ok: bool,
        *,
        uses: list[str] = (),
        project: str = "",
        task: str = "code",
    ) -> str:  # type: ignore[assignment]
        run_id, at = self.ids.new(Kind.RUN), T0 + timedelta(hours=len(self.records))
        self.add(StartRun(**self.env(at, Kind.COMMAND), run_id=run_id, project_id=project or self.project,
                          instructions="greet", task_type=task))  # fmt: skip
        self.add(RunStarted(**self.env(at), run_id=run_id, attempt=1, executor_id="exe_1", sandbox="process"))
        if uses:
            applied = [AppliedPattern(pattern_id=p, version=1, selected_by="auto") for p in uses]
            self.add(PatternApplied(**self.env(at), run_id=run_id, patterns=applied))
        self.add(
            TurnCompleted(
                **self.env(at), run_id=run_id, usage=Usage(input_tokens=tokens - 10, output_tokens=10)
            )
        )
        end = at + timedelta(seconds=seconds)
        if ok:
            self.add(RunSucceeded(**self.env(end), run_id=run_id, summary=RunSummary(goal="greet")))
        else:
            self.add(
                RunFailed(**self.env(end), run_id=run_id, reason=FailureReason.NONZERO_EXIT, detail="no")
            )
        return run_id

    def pattern_of(self, run_id: str) -> str:
        pid = pattern_id_for(run_id)
        provenance = Provenance(
            run_id=run_id, first_seq=1, last_seq=2, extractor_version="t", content_hash="0" * 64
        )
        self.add(PatternExtracted(**self.env(T0), pattern_id=pid, project_id=self.project, task_type="code",
                                  content=CONTENT, provenance=provenance))  # fmt: skip
        return pid


@pytest.fixture
def stats(tmp_path: Path) -> tuple[Log, dict[str, dict[str, Any]]]:
    log = Log()
    source = log.run(100, 1000, ok=True)
    first = log.pattern_of(source)
    comparable = log.run(120, 1200, ok=True)
    second = log.pattern_of(comparable)
    log.run(5, 50, ok=False)
    log.run(5, 50, ok=False)
    log.run(60, 600, ok=True, uses=[first])
    log.run(80, 800, ok=True, uses=[first])
    log.run(10, 100, ok=False, uses=[first])
    log.run(9, 90, ok=False, uses=[second])
    log.run(9, 90, ok=False, uses=[second])
    log.run(1, 10, ok=True, project=log.ids.new(Kind.PROJECT))  # another project: not comparable
    log.run(1, 10, ok=True, task="research")  # another task type: not comparable
    edit = PatternEdited(**log.env(T0), pattern_id=first, version=2, content=CONTENT, content_hash="1" * 64)
    log.add(edit)
    with open_store(tmp_path / "p.duckdb", pattern_min_runs=2) as store:
        store.apply(log.records)
        with store.cursor() as cur:
            listed = answer(cur, "acme", "list_patterns", b"{}")["items"]
            got = answer(cur, "acme", "get_pattern", msgspec.json.encode({"pattern_id": first}))
            dashboard = answer(cur, "acme", "stats", b"{}")["patterns"]
    rows = {row["pattern_id"]: row for row in listed}
    rows["got"] = got
    rows["dashboard"] = {"order": [row["pattern_id"] for row in dashboard]}
    rows["first"], rows["second"] = rows[first], rows[second]
    return log, rows


def test_uplift_against_comparable_runs(stats: tuple[Log, dict[str, dict[str, Any]]]) -> None:
    """Uses, success rate, medians of succeeded runs and uplift come out of the view as computed by hand."""
    _, rows = stats
    first = rows["first"]
    assert (first["uses"], first["finished"], first["succeeded"]) == (3, 3, 2)
    assert first["success_rate"] == pytest.approx(2 / 3)
    assert (first["median_duration_ms"], first["median_tokens"]) == (70_000, 700)
    # comparable and not using it: the source (ok), the other pattern's source (ok), two failures, and
    # the two runs that used only the second pattern (failed)
    assert first["baseline_runs"] == 6
    assert first["baseline_success_rate"] == pytest.approx(2 / 6)
    assert first["uplift"] == pytest.approx(2 / 3 - 2 / 6)
    assert (first["duration_saved_ms"], first["tokens_saved"]) == (110_000 - 70_000, 1100 - 700)
    assert first["flagged"] is False
    assert first["last_used_at"] is not None


def test_negative_uplift_over_enough_runs_is_flagged(stats: tuple[Log, dict[str, dict[str, Any]]]) -> None:
    """A pattern whose runs all failed, over the configured minimum, is flagged for retirement."""
    second = stats[1]["second"]
    assert (second["uses"], second["success_rate"]) == (2, 0.0)
    assert second["uplift"] < 0
    assert second["flagged"] is True


def test_the_dashboard_lists_flagged_patterns_first(stats: tuple[Log, dict[str, dict[str, Any]]]) -> None:
    """The stats query's `patterns` series puts the pattern flagged for retirement first."""
    rows = stats[1]
    assert rows["dashboard"]["order"] == [rows["second"]["pattern_id"], rows["first"]["pattern_id"]]


def test_get_pattern_lists_every_version(stats: tuple[Log, dict[str, dict[str, Any]]]) -> None:
    """The edited pattern shows version 2 with its steps decoded, and both versions."""
    got = stats[1]["got"]
    assert got["version"] == 2
    assert got["steps"] == [{"kind": "create", "text": "Create it"}]
    assert [v["version"] for v in got["versions"]] == [1, 2]
