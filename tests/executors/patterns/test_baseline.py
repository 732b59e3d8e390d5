"""The deterministic pattern: steps and variables from a run's events, secrets and host paths scrubbed."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from executors.patterns import baseline, redact, render
from executors.patterns.select import Candidate, rank
from schemas import (
    CommandExecuted,
    FileChange,
    FilesChanged,
    IdSource,
    Kind,
    RunSucceeded,
    RunSummary,
    StartRun,
)
from schemas.pattern import MAX_STEPS

IDS = IdSource()
AT = datetime(2025, 3, 1, tzinfo=UTC)
RUN = IDS.new(Kind.RUN)
SECRETS = [
    "sk-proj-abcdefghijklmnop1234567890",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "AKIAIOSFODNN7EXAMPLE",
    "hunter2-Secret-99",
    "eyJhbGciOiJIUzI1NiJ9abc",
]


def _envelope() -> dict[str, object]:
    return {"id": IDS.new(Kind.EVENT), "at": AT, "tenant": "acme", "actor": "exe_1", "run_id": RUN}


def _start(instructions: str) -> StartRun:
    return StartRun(
        id=IDS.new(Kind.COMMAND), at=AT, tenant="acme", actor="key_a", run_id=RUN,
        project_id=IDS.new(Kind.PROJECT), instructions=instructions,
    )  # fmt: skip


def _ran(command: str, code: int = 0) -> CommandExecuted:
    return CommandExecuted(**_envelope(), item_id="i", command=command, exit_code=code, status="completed")  # type: ignore[arg-type]


def _changed(*changes: tuple[str, str]) -> FilesChanged:
    files = [FileChange(path=p, kind=k) for p, k in changes]  # type: ignore[arg-type]
    return FilesChanged(**_envelope(), item_id="f", changes=files, status="completed")  # type: ignore[arg-type]


def _done() -> RunSucceeded:
    return RunSucceeded(**_envelope(), summary=RunSummary(goal="g", final_message="done"))  # type: ignore[arg-type]


def test_steps_follow_the_run_in_order_and_checks_are_marked() -> None:
    """Commands with their purpose, files written (relative) and passing checks, in the run's order."""
    events = [
        _ran("/bin/bash -lc 'cat README.md'"),
        _ran("/bin/bash -lc 'ls src'"),
        _changed(("/workspace/src/app.py", "add"), ("/workspace/README.md", "update")),
        _changed(("/workspace/src/app.py", "update")),
        _ran("false", code=1),
        _ran("/bin/bash -lc 'python -m pytest -q'"),
        _done(),
    ]
    content = baseline.build(
        _start("Add `greet` to src/app.py, see https://example.com/spec"), events, what="code"
    )
    assert [(s.kind, s.target) for s in content.steps] == [
        ("command", "cat README.md && ls src"),
        ("create", "src/app.py"),
        ("edit", "README.md"),
        ("check", "python -m pytest -q"),
    ]
    kinds = {(v.kind, v.example) for v in content.variables}
    assert {
        ("path", "src/app.py"),
        ("file_type", ".py"),
        ("name", "greet"),
        ("url", "https://example.com/spec"),
    } <= kinds
    assert "checks that passed" in content.summary
    assert baseline.build(_start("x"), events, what="code") == baseline.build(
        _start("x"), events, what="code"
    )


def test_at_most_twelve_steps_ending_with_the_last() -> None:
    """A long run is cut to `MAX_STEPS`, keeping its final check."""
    events = [
        _ran(f"make step{n}") if n % 2 else _changed((f"/workspace/f{n}.txt", "add")) for n in range(40)
    ]
    content = baseline.build(_start("many"), [*events, _ran("make test"), _done()], what="code")
    assert len(content.steps) == MAX_STEPS
    assert content.steps[-1].kind == "check"


def test_secrets_and_host_paths_never_reach_a_pattern() -> None:
    """Keys, tokens, passwords and bearer tokens become [REDACTED]; host paths go or become relative."""
    instructions = f"Deploy with {SECRETS[1]} and AWS key {SECRETS[2]}; files in /home/alice/project/docs"
    events = [
        _ran(f"curl -H 'Authorization: Bearer {SECRETS[4]}' https://api.example.com/x"),
        _ran(f"OPENAI_API_KEY={SECRETS[0]} ./deploy.sh --password={SECRETS[3]}"),
        _changed(("/tmp/pytest-9/executor/run_1/workspace/conf/app.ini", "add")),
        _done(),
    ]
    encoded = msgspec.json.encode(
        redact.struct(baseline.build(_start(instructions), events, what="code"))
    ).decode()
    for secret in SECRETS:
        assert secret not in encoded
    assert "/home/alice" not in encoded
    assert "/tmp/" not in encoded
    assert "conf/app.ini" in encoded
    assert "[REDACTED]" in encoded


def test_redaction_leaves_ordinary_text_alone() -> None:
    """Relative paths, URLs and prose about tokens are kept."""
    text = "Raise the token budget; edit src/a.py and see https://example.com/a/b"
    assert redact.text(text) == text
    assert redact.text("password: hunter2-Secret-99") == "password: [REDACTED]"


def test_render_has_summary_numbered_steps_variables_and_guidance() -> None:
    """The block the prompt carries: summary, numbered steps, variables, and advice to adapt."""
    content = baseline.build(
        _start("Add `greet`"), [_changed(("/workspace/a.py", "add")), _ran("pytest"), _done()], what="code"
    )
    block = render(content, pattern_id="pat_X", version=2)
    assert block.startswith('<reference_workflow id="pat_X" version="2">')
    assert block.endswith("</reference_workflow>")
    assert "\n1. Create the file: `a.py`" in block
    assert "\n2. Run the checks; they passed: `pytest`" in block
    assert "- file_a (path): a.py" in block
    assert "adapt" in block


def test_ranking_prefers_relevant_then_successful_patterns() -> None:
    """BM25 relevance times smoothed success rate; irrelevant patterns are left out; ties break by id."""
    candidates = [
        Candidate(pattern_id="pat_a", name="add greeting file", goal="greeting", finished=4, succeeded=4),
        Candidate(pattern_id="pat_b", name="add greeting file", goal="greeting", finished=4, succeeded=0),
        Candidate(pattern_id="pat_c", name="rotate database backups", goal="backups"),
    ]
    ranked = rank("add a greeting file for the swarm", candidates)
    assert [c.pattern_id for _, c in ranked] == ["pat_a", "pat_b"]
    assert ranked[0][0] > ranked[1][0] > 0
