"""Recorded logs under tests/golden still decode, fold to their outcomes and prove they were not altered."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import bus
import schemas
from schemas import project_state, run_state, subjects
from schemas.chain import Entry, verify
from tests.golden import record as recorder

GOLDEN_DIR = Path(__file__).parents[1] / "golden"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.jsonl"))
RECORDED = GOLDEN_DIR / "run_lifecycle.jsonl"
# The final status of every aggregate in each golden file, sorted per aggregate kind.
EXPECTED = {
    "run_lifecycle.jsonl": {"project": ["active"], "run": ["cancelled", "succeeded"]},
}
FOLDS: dict[str, Callable[[str, Any], Any]] = {"run": run_state.fold, "project": project_state.fold}


def load(path: Path) -> list[Entry]:
    """The records of a golden file, with `data` back as the exact stored bytes."""
    entries = []
    for text in path.read_text(encoding="utf-8").splitlines():
        fields = json.loads(text)
        data = fields["data"].encode()
        entries.append(
            Entry(seq=fields["seq"], subject=fields["subject"], data=data, recorded_digest=fields["digest"])
        )
    return entries


def is_event(entry: Entry) -> bool:
    return subjects.parse(entry.subject).kind == "evt"


def event_entries(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """The event records of each subject, in order."""
    grouped: dict[str, list[Entry]] = defaultdict(list)
    for entry in filter(is_event, entries):
        grouped[entry.subject].append(entry)
    return grouped


def final_statuses(entries: Iterable[Entry]) -> dict[str, list[str]]:
    """Fold each aggregate's events; the final statuses, sorted per aggregate kind."""
    statuses: dict[str, list[str]] = defaultdict(list)
    for subject, records in event_entries(entries).items():
        parsed = subjects.parse(subject)
        events = [schemas.decode_event(record.data) for record in records]
        statuses[parsed.aggregate].append(str(FOLDS[parsed.aggregate](parsed.id, events).status))
    return {aggregate: sorted(found) for aggregate, found in statuses.items()}


def tampered(entries: list[Entry], seq: int, offset: int) -> list[Entry]:
    """A copy of `entries` with one byte of record `seq` changed."""
    target = next(entry for entry in entries if entry.seq == seq)
    data = bytearray(target.data)
    data[offset % len(data)] ^= 0x01
    return [msgspec.structs.replace(e, data=bytes(data)) if e is target else e for e in entries]


def without_digests(entries: list[Entry]) -> list[Entry]:
    return [msgspec.structs.replace(entry, recorded_digest=None) for entry in entries]


def check_properties(path: Path) -> None:
    """Everything a golden file must satisfy: decodes, folds to its expected outcome, chain verifies."""
    entries = load(path)
    for entry in entries:
        schemas.decode(entry.data)
    assert final_statuses(entries) == EXPECTED[path.name]
    assert verify(entries).ok


def tamper_positions(path: Path) -> list[tuple[int, int]]:
    """(seq, byte offset) pairs: the first command, the first, a middle and the last event of each subject."""
    entries = load(path)
    chosen = {next(entry.seq for entry in entries if not is_event(entry))}
    for records in event_entries(entries).values():
        chosen |= {records[0].seq, records[len(records) // 2].seq, records[-1].seq}
    return [(seq, offset) for seq in sorted(chosen) for offset in (1, -2)]


TAMPER_CASES = [(path, seq, offset) for path in GOLDEN_FILES for seq, offset in tamper_positions(path)]


def test_golden_files_exist_and_state_their_outcomes() -> None:
    """There is at least one golden file, and each has its expected final statuses listed here."""
    assert RECORDED in GOLDEN_FILES
    assert {path.name for path in GOLDEN_FILES} == set(EXPECTED)


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.name)
def test_every_line_decodes_on_its_own_subject(path: Path) -> None:
    """Every record decodes, sits on the subject its message names, and sequences rise from 1 without gaps."""
    entries = load(path)
    assert [entry.seq for entry in entries] == list(range(1, len(entries) + 1))
    for entry in entries:
        message = schemas.decode(entry.data)
        expected = subjects.of_event(message) if is_event(entry) else subjects.of_command(message)
        assert entry.subject == expected


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.name)
def test_events_fold_to_the_expected_outcomes(path: Path) -> None:
    """Folding each aggregate's events gives the outcomes the file records."""
    assert final_statuses(load(path)) == EXPECTED[path.name]


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.name)
def test_hash_chain_verifies(path: Path) -> None:
    """The untouched records verify, and each subject's head is the digest of its last event."""
    entries = load(path)
    report = verify(entries)
    assert report.ok, report.first_break
    assert (report.checked, report.first_seq, report.last_seq) == (len(entries), 1, entries[-1].seq)
    heads = {
        subject: hashlib.sha256(records[-1].data).hexdigest()
        for subject, records in event_entries(entries).items()
    }
    assert report.heads == heads


@pytest.mark.parametrize(
    ("path", "seq", "offset"), TAMPER_CASES, ids=lambda v: v.name if isinstance(v, Path) else str(v)
)
def test_one_changed_byte_is_found_at_its_record(path: Path, seq: int, offset: int) -> None:
    """Changing one byte of any record breaks verification at exactly that record."""
    report = verify(tampered(load(path), seq, offset))
    assert not report.ok
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.problem) == (seq, "digest_mismatch")


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.name)
def test_without_recorded_digests_the_next_link_finds_a_change(path: Path) -> None:
    """With no digests beside the records, a changed event is caught by the next event's `prev_hash`."""
    entries = without_digests(load(path))
    assert verify(entries).ok
    longest = max(event_entries(entries).values(), key=len)
    middle = len(longest) // 2
    changed, following = longest[middle], longest[middle + 1]
    report = verify(tampered(entries, changed.seq, 10))
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.problem) == (following.seq, "chain_broken")


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.name)
def test_without_recorded_digests_a_changed_last_event_shows_in_the_heads(path: Path) -> None:
    """A changed last event passes the chain walk but changes its subject's head, which anchors catch."""
    entries = without_digests(load(path))
    last = entries[-1]
    assert is_event(last)
    report = verify(tampered(entries, last.seq, 10))
    assert report.ok
    assert report.heads[last.subject] != verify(entries).heads[last.subject]


def test_a_tenant_named_evt_is_not_mistaken_for_events() -> None:
    """Repeated commands of tenant `evt` verify, while that tenant's events are still chain-checked."""
    command = b'{"type":"run.cancel"}'
    sha = hashlib.sha256(command).hexdigest()
    cmd_subject = "swarm.evt.cmd.run.run_01JHMMS53GXXDXE1W4XHYSGQ0W.cancel"
    commands = [Entry(seq=n, subject=cmd_subject, data=command, recorded_digest=sha) for n in (1, 2)]
    assert verify(commands).ok
    unlinked = Entry(
        seq=3, subject="swarm.evt.evt.run.run_01JHMMS53GXXDXE1W4XHYSGQ0W", data=b'{"prev_hash":"00"}'
    )
    report = verify([*commands, unlinked])
    assert report.first_break is not None
    assert (report.first_break.seq, report.first_break.problem) == (3, "chain_broken")


def test_recorder_reproduces_the_golden_file(server_settings: bus.ServerSettings, tmp_path: Path) -> None:
    """Re-recording against a real nats-server gives a valid log, byte for byte the golden one."""
    out = tmp_path / "run_lifecycle.jsonl"
    assert recorder.main([str(out)]) == 0
    check_properties(out)
    assert out.read_bytes() == RECORDED.read_bytes()


def test_recorder_refuses_wrong_usage() -> None:
    """The recorder needs exactly one output path."""
    assert recorder.main([]) == 2
