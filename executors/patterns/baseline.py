"""The deterministic pattern of a succeeded run, built from its events alone (pure: no I/O, no model).

Steps, in the run's order: the commands that ran successfully with their purpose (checks that passed
marked as such), and the files created, edited or deleted; adjacent steps of one kind are merged and
the list is cut to `MAX_STEPS`, always ending with the run's last step. Variables: the changed files,
their types, names quoted in the instructions, URLs. Everything passes through `redact`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

from executors.patterns import redact
from schemas import CommandExecuted, FilesChanged, RunSucceeded, StartRun
from schemas.pattern import MAX_STEPS, MAX_VARIABLES, Content, Step, Variable
from schemas.run import RunEvents

VERSION = "1"
_SHELL = re.compile(r"^(?:\S*/)?(?:ba|z|da)?sh\s+-l?c\s+(.+)$", re.S)
_CHECKS = re.compile(
    r"(?:^|[\s;&|/(])(?:pytest|tox|nox|ruff|mypy|flake8|pylint|eslint|tsc|test\.sh|"
    r"(?:npm|yarn|pnpm)\s+(?:run\s+)?(?:test|lint|check)|(?:cargo|go)\s+(?:test|vet|clippy)|"
    r"make\s+(?:test|check|lint)|unittest|jest|vitest|shellcheck)\b"
)
_READERS = {
    "cat",
    "ls",
    "head",
    "tail",
    "grep",
    "rg",
    "find",
    "sed",
    "wc",
    "tree",
    "less",
    "pwd",
    "nl",
    "stat",
}
_INSTALLERS = re.compile(
    r"^(?:pip3?|uv|npm|yarn|pnpm|apt(?:-get)?|cargo|go|poetry)\s+(?:install|add|get|sync)\b"
)
_QUOTED = re.compile(r"`([^`\s]{2,60})`|\"([^\"\s]{2,60})\"")
_URL = re.compile(r"\bhttps?://[^\s'\"<>`)]+")
_TAG = re.compile(r"\[[a-z]+:[^\]]*\]\s*")
_FILE_KINDS = {"add": "create", "update": "edit", "delete": "delete"}


def build(command: StartRun, events: Iterable[RunEvents], *, what: str) -> Content:
    """The pattern content of the run `command` started; `what` names the task type for the summary."""
    steps: list[Step] = []
    seen_files: set[str] = set()
    final = ""
    for event in events:
        match event:
            case CommandExecuted(exit_code=0, status="completed"):
                steps.append(_command_step(event.command))
            case FilesChanged(status="completed"):
                steps.extend(_file_steps(event, seen_files))
            case RunSucceeded():
                final = event.summary.final_message
            case _:
                pass
    goal = redact.text(command.instructions)
    steps = _cut(_merged(steps)) or [Step(kind="note", text=_short(f"Answer directly: {final}", 300))]
    files = [step.target for step in steps if step.kind in ("create", "edit")]
    return Content(
        name=_name(goal),
        goal=goal[:64_000],
        summary=_summary(what, steps),
        steps=steps,
        variables=variables(goal, files, [step.target for step in steps if step.kind == "command"]),
    )


def unwrap(command: str) -> str:
    """`cat a` for Codex's `/bin/bash -lc 'cat a'`; other commands as they are."""
    found = _SHELL.match(command.strip())
    if found is None:
        return command.strip()
    try:
        words = shlex.split(found.group(1))
    except ValueError:
        return found.group(1)
    return words[0] if len(words) == 1 else found.group(1)


def variables(goal: str, files: Sequence[str], commands: Sequence[str]) -> list[Variable]:
    """What would change for a similar task, at most `MAX_VARIABLES`, in a fixed order."""
    found: dict[str, Variable] = {}
    paths = [path for target in files for path in target.split(", ")]
    for path in paths[:5]:
        stem = path.rsplit("/", 1)[-1].split(".", 1)[0]
        _add(
            found,
            Variable(
                name=_slug(f"file_{stem}"), kind="path", example=path, description="a file the task wrote"
            ),
        )
    suffixes = sorted({"." + path.rsplit(".", 1)[1] for path in paths if "." in path.rsplit("/", 1)[-1]})
    for suffix in suffixes[:3]:
        _add(
            found,
            Variable(
                name="file_type", kind="file_type", example=suffix, description="a kind of file worked on"
            ),
        )
    for match in _QUOTED.finditer(goal):
        word = match.group(1) or match.group(2)
        if not _URL.match(word):
            _add(
                found,
                Variable(
                    name=_slug(f"name_{word}"), kind="name", example=word, description="a name from the task"
                ),
            )
    for url in _URL.findall(" ".join([goal, *commands])):
        _add(
            found,
            Variable(name="url", kind="url", example=url[:2000], description="an address the task used"),
        )
    return list(found.values())[:MAX_VARIABLES]


def _command_step(raw: str) -> Step:
    line = redact.text(unwrap(raw))
    target = _short(line, 500)
    if _CHECKS.search(line):
        return Step(kind="check", text="Run the checks; they passed", target=target)
    first = line.split(maxsplit=1)[0] if line.split() else ""
    if first in _READERS or line.startswith(("git status", "git diff", "git log")):
        return Step(kind="command", text="Read the project to see what is there", target=target)
    if _INSTALLERS.match(line):
        return Step(kind="command", text="Install what the task needs", target=target)
    return Step(kind="command", text="Run a command the task needed", target=target)


def _file_steps(event: FilesChanged, seen: set[str]) -> list[Step]:
    steps = []
    for change in event.changes:
        path = redact.path(change.path)
        if path in seen and change.kind != "delete":
            continue
        seen.add(path)
        kind = _FILE_KINDS[change.kind]
        steps.append(Step(kind=kind, text=f"{kind.capitalize()} the file", target=path))  # type: ignore[arg-type]
    return steps


def _merged(steps: list[Step]) -> list[Step]:
    """Adjacent steps of the same kind and text become one, their targets joined."""
    merged: list[Step] = []
    for step in steps:
        last = merged[-1] if merged else None
        if last is not None and (last.kind, last.text) == (step.kind, step.text) and step.kind != "check":
            joined = (
                last.target if step.target in last.target.split(" && ") else f"{last.target} && {step.target}"
            )
            if step.kind in ("create", "edit", "delete"):
                joined = ", ".join(dict.fromkeys([*last.target.split(", "), step.target]))
            merged[-1] = Step(kind=last.kind, text=_plural(last), target=_short(joined, 2000))
        else:
            merged.append(step)
    return merged


def _plural(step: Step) -> str:
    return f"{step.kind.capitalize()} the files" if step.kind in ("create", "edit", "delete") else step.text


def _cut(steps: list[Step]) -> list[Step]:
    return steps if len(steps) <= MAX_STEPS else [*steps[: MAX_STEPS - 1], steps[-1]]


def _summary(what: str, steps: Sequence[Step]) -> str:
    counts = {
        kind: sum(1 for s in steps if s.kind == kind) for kind in ("create", "edit", "command", "check")
    }
    parts = [f"A {what.replace('_', ' ')} task in {len(steps)} steps"]
    if counts["create"] or counts["edit"]:
        parts.append(f"{counts['create']} creating and {counts['edit']} editing files")
    if counts["command"]:
        parts.append(f"{counts['command']} running commands")
    if counts["check"]:
        parts.append(
            "ending with checks that passed" if steps[-1].kind == "check" else "with checks that passed"
        )
    return _short(", ".join(parts) + ".", 300)


def _name(goal: str) -> str:
    words = _TAG.sub("", goal).split()
    return _short(" ".join(words[:8]) or "pattern", 120)


def _add(found: dict[str, Variable], variable: Variable) -> None:
    if variable.example in {v.example for v in found.values()}:
        return
    name, number = variable.name, 2
    while name in found:
        name, number = f"{variable.name[:44]}_{number}", number + 1
    found[name] = Variable(
        name=name, kind=variable.kind, example=variable.example, description=variable.description
    )


def _slug(value: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")
    return slug[:48] if slug and slug[0].isalpha() else f"v_{slug}"[:48]


def _short(value: str, limit: int) -> str:
    flat = " ".join(value.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
