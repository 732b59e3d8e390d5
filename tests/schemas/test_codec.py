"""Every command and event survives encode/decode; bad input fails with `InvalidMessage` naming the path."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import schemas
from schemas import (
    AgentMessage,
    AnyCommand,
    AnyEvent,
    ArchiveProject,
    ArtifactStored,
    BlobRef,
    Body,
    CancelRun,
    CodexNotice,
    CommandExecuted,
    CommandRun,
    CommandStarted,
    CreateProject,
    FailureReason,
    FileChange,
    FilesChanged,
    GitSource,
    IdSource,
    InvalidMessage,
    Kind,
    LimitWarning,
    LineQuarantined,
    LocalSource,
    Message,
    ModelCallRecorded,
    PlanUpdated,
    ProjectArchived,
    ProjectCreated,
    ProjectUpdated,
    Reasoning,
    RunCancelled,
    RunFailed,
    RunLimits,
    RunStarted,
    RunSucceeded,
    RunSummary,
    RunTimedOut,
    StartRun,
    TodoItem,
    ToolCalled,
    TurnCompleted,
    UnknownMessageType,
    UpdateProject,
    Usage,
    WebSearched,
    WorkspacePrepared,
    subjects,
)

AT = datetime(2025, 3, 1, 12, 30, 15, 250_000, tzinfo=UTC)
_IDS = IdSource(clock_ms=lambda: 1_740_832_215_250, entropy=random.Random(42).randbytes)
RUN_ID = _IDS.new(Kind.RUN)
PROJECT_ID = _IDS.new(Kind.PROJECT)
COMMAND_ID = _IDS.new(Kind.COMMAND)
PATTERN_ID = _IDS.new(Kind.PATTERN)
ACTOR = "key_" + _IDS.new(Kind.KEY)[4:]
EXECUTOR = "exe_worker-7"
SHA = "ab" * 32
BLOB = BlobRef(sha256=SHA, size=123_456, media_type="text/x-diff")


def command_envelope() -> dict[str, Any]:
    return {"id": _IDS.new(Kind.COMMAND), "at": AT, "tenant": "acme", "actor": ACTOR, "origin": "cli/1.0"}


def event_envelope() -> dict[str, Any]:
    return {
        "id": _IDS.new(Kind.EVENT),
        "at": AT,
        "tenant": "acme",
        "actor": EXECUTOR,
        "causation_id": COMMAND_ID,
        "prev_hash": SHA,
    }


def run_event(cls: Callable[..., Any], **fields: Any) -> Any:
    return cls(**event_envelope(), run_id=RUN_ID, **fields)


def project_event(cls: Callable[..., Any], **fields: Any) -> Any:
    return cls(**event_envelope(), project_id=PROJECT_ID, **fields)


def _project_commands() -> list[Message]:
    env = command_envelope
    return [
        CreateProject(
            **env(),
            project_id=PROJECT_ID,
            name="shop",
            source=GitSource(url="https://git.example.com/shop.git", ref="main"),
            description="the web shop",
            default_task_type="research",
        ),
        UpdateProject(**env(), project_id=PROJECT_ID, source=LocalSource(path="/srv/shop"), name="shop2"),
        ArchiveProject(**env(), project_id=PROJECT_ID, reason="moved"),
    ]


def _run_commands() -> list[Message]:
    limits = RunLimits(deadline_seconds=600, idle_seconds=60, max_tokens=10_000, max_cost_usd=1.5)
    start = StartRun(
        **command_envelope(),
        run_id=RUN_ID,
        project_id=PROJECT_ID,
        instructions="Fix the failing test in shop/cart.py — keep the API.",
        task_type="code",
        reference_run_id=RUN_ID,
        pattern_ids=[PATTERN_ID],
        auto_patterns=True,
        limits=limits,
    )
    return [start, CancelRun(**command_envelope(), run_id=RUN_ID, reason="wrong branch")]


def _project_events() -> list[Message]:
    return [
        project_event(ProjectCreated, name="shop", source=LocalSource(path="/srv/shop"), description="d"),
        project_event(ProjectUpdated, description="new", source=GitSource(url="git@example.com:a/b.git")),
        project_event(ProjectArchived, reason="done"),
    ]


def _lifecycle_events() -> list[Message]:
    summary = RunSummary(
        goal="fix the test",
        files_changed=["shop/cart.py"],
        commands=[CommandRun(command="pytest -q", exit_code=0), CommandRun(command="kill", exit_code=None)],
        final_message="Fixed.",
        usage=Usage(input_tokens=10, cached_input_tokens=2, output_tokens=3, reasoning_output_tokens=1),
    )
    return [
        run_event(RunStarted, attempt=2, executor_id=EXECUTOR, sandbox="docker", codex_version="0.46.0"),
        run_event(
            WorkspacePrepared, source="git", baseline_commit="c0ffee" * 7 + "ab", files=12, bytes=3_400
        ),
        run_event(RunSucceeded, summary=summary),
        run_event(RunFailed, reason=FailureReason.NONZERO_EXIT, detail="exit 2", suggestion="retry"),
        run_event(RunCancelled, cancelled_by=ACTOR, reason="stop"),
        run_event(RunTimedOut, limit="idle", seconds=60),
    ]


def _step_events() -> list[Message]:
    body = Body(text="preview…", ref=BLOB)
    return [
        run_event(AgentMessage, item_id="item_1", text=Body(text="Done — all green ✅")),
        run_event(Reasoning, item_id="item_2", text=body),
        run_event(CommandStarted, item_id="item_3", command="pytest -q"),
        run_event(
            CommandExecuted, item_id="item_3", command="pytest -q", exit_code=1, status="failed", output=body
        ),
        run_event(
            FilesChanged,
            item_id="item_4",
            changes=[FileChange(path="a.py", kind="update")],
            status="completed",
        ),
        run_event(ToolCalled, item_id="item_5", server="fs", tool="read", status="completed", arguments=body),
        run_event(WebSearched, item_id="item_6", query="msgspec tagged union"),
        run_event(
            PlanUpdated, item_id="item_7", items=[TodoItem(text="fix", completed=True), TodoItem(text="test")]
        ),
    ]


def _other_run_events() -> list[Message]:
    return [
        run_event(TurnCompleted, usage=Usage(input_tokens=100, output_tokens=20)),
        run_event(ModelCallRecorded, model="gpt-5", status=200, latency_ms=840, request=BLOB, response=BLOB),
        run_event(ArtifactStored, name="final.diff", kind="diff", blob=BLOB),
        run_event(LineQuarantined, raw=Body(text='{"type":"mystery"}'), problem="unknown item type"),
        run_event(CodexNotice, level="error", message=Body(text="Reconnecting... 1/5")),
        run_event(LimitWarning, limit="tokens", used=8_000.0, soft_limit=8_000.0, hard_limit=10_000.0),
    ]


def _key_messages() -> list[Message]:
    key_id = _IDS.new(Kind.KEY)
    return [
        schemas.CreateKey(**command_envelope(), key_id=key_id, name="ci", role="operator", secret_hash=SHA),
        schemas.RevokeKey(**command_envelope(), key_id=key_id, reason="rotated"),
        schemas.KeyCreated(
            **event_envelope(), key_id=key_id, name="ci", role="viewer", secret_hash=SHA, expires_at=AT
        ),
        schemas.KeyRevoked(**event_envelope(), key_id=key_id),
    ]


def _pattern_messages() -> list[Message]:
    pid = schemas.pattern_id_for(RUN_ID)
    step = schemas.Step(kind="check", text="Run the checks", target="pytest -q")
    variable = schemas.Variable(name="file_main", kind="path", example="src/main.py")
    content = schemas.Content(name="fix", goal="fix it", summary="A fix.", steps=[step], variables=[variable])
    provenance = schemas.Provenance(
        run_id=RUN_ID, first_seq=3, last_seq=40, extractor_version="baseline-1", content_hash=SHA
    )
    applied = schemas.AppliedPattern(pattern_id=pid, version=2, selected_by="auto", score=0.7)
    return [
        schemas.ExtractPattern(**command_envelope(), pattern_id=pid, run_id=RUN_ID),
        schemas.EditPattern(**command_envelope(), pattern_id=pid, name="better", steps=[step]),
        schemas.RetirePattern(**command_envelope(), pattern_id=pid, reason="stale"),
        schemas.RestorePattern(**command_envelope(), pattern_id=pid),
        schemas.PatternExtracted(
            **event_envelope(), pattern_id=pid, project_id=PROJECT_ID, task_type="code", content=content,
            provenance=provenance, refinement="fallback", refinement_detail="not JSON",
        ),
        schemas.PatternEdited(
            **event_envelope(), pattern_id=pid, version=2, content=content, content_hash=SHA
        ),
        schemas.PatternRetired(**event_envelope(), pattern_id=pid, reason="stale"),
        schemas.PatternRestored(**event_envelope(), pattern_id=pid),
        run_event(schemas.PatternApplied, patterns=[applied]),
    ]  # fmt: skip


SAMPLES: dict[type, Message] = {
    type(message): message
    for message in (
        _project_commands() + _run_commands() + _project_events() + _lifecycle_events() + _step_events()
    )
    + _other_run_events()
    + _key_messages()
    + _pattern_messages()
}
COMMAND_CLASSES: tuple[type, ...] = AnyCommand.__args__
EVENT_CLASSES: tuple[type, ...] = AnyEvent.__args__
ALL_CLASSES = COMMAND_CLASSES + EVENT_CLASSES


def sample(cls: type) -> Any:
    """The sample of `cls`; a message type without a sample fails the test that asks for it."""
    assert cls in SAMPLES, f"no sample for {cls.__name__}: add one to tests/schemas/test_codec.py"
    return SAMPLES[cls]


def as_dict(cls: type) -> dict[str, Any]:
    return json.loads(schemas.encode(sample(cls)))


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_type_round_trips_through_decode(cls: type) -> None:
    """Each message type decodes from its own encoding to an equal value and re-encodes to the same bytes."""
    message = sample(cls)
    data = schemas.encode(message)
    decoded = schemas.decode(data)
    assert type(decoded) is cls
    assert decoded == message
    assert schemas.encode(decoded) == data


@pytest.mark.parametrize("cls", COMMAND_CLASSES, ids=lambda cls: cls.__name__)
def test_every_command_round_trips_through_decode_command(cls: type) -> None:
    """Each command decodes with the command-only decoder, from bytes and from str alike."""
    data = schemas.encode(sample(cls))
    assert schemas.decode_command(data) == sample(cls)
    assert schemas.decode_command(data.decode()) == sample(cls)


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__name__)
def test_every_event_round_trips_through_decode_event(cls: type) -> None:
    """Each event decodes with the event-only decoder, from bytes and from str alike."""
    data = schemas.encode(sample(cls))
    assert schemas.decode_event(data) == sample(cls)
    assert schemas.decode_event(data.decode()) == sample(cls)


def test_samples_cover_exactly_the_message_unions() -> None:
    """The sample factory has one sample per union member and none for types outside the unions."""
    assert set(SAMPLES) == set(ALL_CLASSES)


def test_tags_are_unique_and_match_the_type_sets() -> None:
    """Every type tag names one class, and COMMAND_TYPES / EVENT_TYPES list exactly those tags."""
    command_tags = [sample(cls).type for cls in COMMAND_CLASSES]
    event_tags = [sample(cls).type for cls in EVENT_CLASSES]
    assert len(set(command_tags + event_tags)) == len(ALL_CLASSES)
    assert set(command_tags) == schemas.COMMAND_TYPES
    assert set(event_tags) == schemas.EVENT_TYPES


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_unknown_fields_from_a_newer_writer_are_tolerated(cls: type) -> None:
    """Extra top-level fields written by a newer version are ignored on decode."""
    newer = {**as_dict(cls), "added_later": {"nested": [1, 2]}, "schema_version": 2}
    decoded = schemas.decode(json.dumps(newer))
    assert type(decoded) is cls
    assert decoded.schema_version == 2


def test_unknown_nested_fields_are_tolerated() -> None:
    """Extra fields inside nested value types (a body, a blob reference) are ignored on decode."""
    data = as_dict(Reasoning)
    data["text"]["encoding"] = "utf-8"
    data["text"]["ref"]["storage"] = "s3"
    assert schemas.decode(json.dumps(data)) == sample(Reasoning)


@pytest.mark.parametrize("decode", [schemas.decode, schemas.decode_command, schemas.decode_event])
def test_unknown_type_tag_raises_unknown_message_type(decode: Callable[[str], Message]) -> None:
    """A tag no reader knows raises `UnknownMessageType` carrying the tag."""
    data = json.dumps({**as_dict(StartRun), "type": "run.paused"})
    with pytest.raises(UnknownMessageType, match=r"run\.paused") as caught:
        decode(data)
    assert caught.value.tag == "run.paused"


@pytest.mark.parametrize(
    ("decode", "cls"), [(schemas.decode_command, RunStarted), (schemas.decode_event, StartRun)]
)
def test_a_known_type_on_the_wrong_decoder_is_invalid_not_unknown(
    decode: Callable[[bytes], Message], cls: type
) -> None:
    """An event given to the command decoder (or the reverse) is invalid, not from a newer writer."""
    with pytest.raises(InvalidMessage, match=r"\$\.type") as caught:
        decode(schemas.encode(sample(cls)))
    assert not isinstance(caught.value, UnknownMessageType)


INVALID_CASES = [
    (StartRun, {"run_id": "run_123"}, "$.run_id"),
    (StartRun, {"project_id": RUN_ID}, "$.project_id"),
    (StartRun, {"at": "2025-03-01T12:30:15"}, "$.at"),
    (StartRun, {"instructions": "x" * 32_001}, "$.instructions"),
    (StartRun, {"instructions": ""}, "$.instructions"),
    (StartRun, {"tenant": "Acme"}, "$.tenant"),
    (StartRun, {"actor": "root"}, "$.actor"),
    (StartRun, {"pattern_ids": [PATTERN_ID] * 11}, "$.pattern_ids"),
    (StartRun, {"limits": {"max_tokens": 0}}, "$.limits.max_tokens"),
    (CreateProject, {"name": "n" * 201}, "$.name"),
    (CreateProject, {"source": {"kind": "local", "path": ""}}, "$.source.path"),
    (CreateProject, {"source": {"kind": "svn", "url": "x"}}, "$.source"),
    (RunStarted, {"attempt": 0}, "$.attempt"),
    (RunStarted, {"prev_hash": "AB" * 32}, "$.prev_hash"),
    (RunStarted, {"causation_id": RUN_ID}, "$.causation_id"),
    (FilesChanged, {"changes": [{"path": "a", "kind": "rename"}]}, "$.changes[0].kind"),
    (RunFailed, {"reason": "bored"}, "$.reason"),
]


@pytest.mark.parametrize(("cls", "change", "path"), INVALID_CASES, ids=lambda v: getattr(v, "__name__", None))
def test_invalid_fields_raise_invalid_message_naming_the_path(
    cls: type, change: dict[str, Any], path: str
) -> None:
    """A field that breaks its constraint raises `InvalidMessage` whose message names the offending path."""
    with pytest.raises(InvalidMessage) as caught:
        schemas.decode(json.dumps({**as_dict(cls), **change}))
    assert path in caught.value.detail
    assert not isinstance(caught.value, UnknownMessageType)


def test_missing_required_field_is_invalid() -> None:
    """A message without a required field raises `InvalidMessage` naming that field."""
    data = as_dict(StartRun)
    del data["run_id"]
    with pytest.raises(InvalidMessage, match="run_id"):
        schemas.decode(json.dumps(data))


@pytest.mark.parametrize(
    "data", [b"", b"not json", b'{"type": "run.start"', b"\xff\xfe", b"[1, 2]", b'{"id": 1}']
)
def test_garbage_raises_invalid_message(data: bytes) -> None:
    """Bytes that are not a JSON message object raise `InvalidMessage`, never another error."""
    with pytest.raises(InvalidMessage):
        schemas.decode(data)


def test_not_json_says_so() -> None:
    """Malformed JSON is reported as such, not as a schema violation."""
    with pytest.raises(InvalidMessage, match="not valid JSON"):
        schemas.decode(b"{'single': 'quotes'}")


def test_subject_of_a_run_command_has_the_verb_last() -> None:
    """A run command goes to `swarm.<tenant>.cmd.run.<id>.<verb>`."""
    assert subjects.of_command(sample(StartRun)) == f"swarm.acme.cmd.run.{RUN_ID}.start"
    assert subjects.of_command(sample(CancelRun)) == f"swarm.acme.cmd.run.{RUN_ID}.cancel"


def test_subject_of_a_project_command_has_the_verb_last() -> None:
    """A project command goes to `swarm.<tenant>.cmd.project.<id>.<verb>`."""
    assert subjects.of_command(sample(CreateProject)) == f"swarm.acme.cmd.project.{PROJECT_ID}.create"


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__name__)
def test_every_event_of_an_aggregate_shares_one_subject(cls: type) -> None:
    """Events go to `swarm.<tenant>.evt.<aggregate>.<id>`, one subject per aggregate."""
    event = sample(cls)
    assert subjects.of_event(event) == f"swarm.acme.evt.{event.AGGREGATE}.{event.aggregate_id}"
    same = [sample(other) for other in EVENT_CLASSES if sample(other).AGGREGATE == event.AGGREGATE]
    assert {subjects.of_event(other) for other in same} == {subjects.of_event(event)}


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_parse_inverts_the_subject_of_every_message(cls: type) -> None:
    """Parsing a message's subject gives back its tenant, kind, aggregate, id and verb."""
    message = sample(cls)
    is_command = cls in COMMAND_CLASSES
    subject = subjects.of_command(message) if is_command else subjects.of_event(message)
    parsed = subjects.parse(subject)
    assert (parsed.tenant, parsed.aggregate, parsed.id) == ("acme", message.AGGREGATE, message.aggregate_id)
    assert parsed.kind == ("cmd" if is_command else "evt")
    assert parsed.verb == (message.type.rsplit(".", 1)[1] if is_command else None)


@pytest.mark.parametrize(
    "subject",
    [
        f"nats.acme.evt.run.{RUN_ID}",
        f"swarm.acme.evt.run.{RUN_ID}.extra",
        f"swarm.acme.cmd.run.{RUN_ID}",
        f"swarm.acme.log.run.{RUN_ID}",
        "swarm.acme.evt.run",
        "swarm",
        "",
    ],
)
def test_parse_rejects_foreign_subjects(subject: str) -> None:
    """A subject outside the swarm layout raises `InvalidMessage`."""
    with pytest.raises(InvalidMessage, match="not a swarm subject"):
        subjects.parse(subject)


def test_stream_subject_helpers_are_tenant_first() -> None:
    """The wildcard helpers put the tenant right after the root, so filters work per tenant."""
    assert subjects.commands("acme") == "swarm.acme.cmd.*.*.*"
    assert subjects.commands("acme", "run", RUN_ID, "cancel") == f"swarm.acme.cmd.run.{RUN_ID}.cancel"
    assert subjects.tenant_log("acme") == "swarm.acme.>"
