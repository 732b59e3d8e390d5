"""The CLI commands that talk to the gateway: runs (start, watch, list, show, cancel, logs, diff,
artifacts, files), projects, patterns, analyst SQL, stats and run templates.

Exit codes: 0 success (or a succeeded run), 1 a failed run, 2 a usage or request error, 3 a cancelled
run, 4 a timed-out run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from schemas import InvalidMessage, decode_event
from swarm import render
from swarm.client import ApiError, Client, ClientSettings

TEMPLATES: dict[str, dict[str, str]] = json.loads((Path(__file__).with_name("templates.json")).read_text())
EXIT = {"succeeded": 0, "failed": 1, "cancelled": 3, "timed_out": 4}


COMMANDS = (
    *("run", "watch", "show", "ls", "cancel", "logs", "diff", "artifacts", "files"),
    *("projects", "patterns", "sql", "stats", "templates"),
)


def add_parsers(commands: Any) -> None:
    """The gateway-backed subcommands, on the main parser's subparsers; each takes `--json`."""
    _add_parsers(commands)
    for name in COMMANDS:
        commands.choices[name].add_argument("--json", action="store_true", help="machine-readable output")


def _add_parsers(commands: Any) -> None:
    run = commands.add_parser("run", help="start a run (`--watch` follows it live to its end)")
    run.add_argument("instructions", nargs="?", default="", help="what Codex should do")
    run.add_argument("--project", required=True, help="the project id")
    run.add_argument("--task-type", help="task type (default: the project's)")
    run.add_argument("--template", choices=sorted(TEMPLATES), help="start from a template's instructions")
    run.add_argument("--reference-run", help="use the pattern learned from this run")
    run.add_argument("--from-run", help="start from this earlier run's workspace")
    run.add_argument("--pattern", action="append", default=[], help="apply this pattern (repeatable)")
    run.add_argument("--auto-patterns", action="store_true", help="let the executor pick patterns")
    run.add_argument("--deadline", type=int, help="seconds before the run is timed out")
    run.add_argument("--max-tokens", type=int, help="token budget of the run")
    run.add_argument("--idempotency-key", help="retrying with the same key never starts a second run")
    run.add_argument("--watch", action="store_true", help="follow the run live; exit with its outcome")
    for name, helptext in (("watch", "follow a run live to its end"), ("show", "a run's status and summary")):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("run_id")
    listing = commands.add_parser("ls", help="list runs")
    for option in ("--project", "--status", "--task-type"):
        listing.add_argument(option)
    listing.add_argument("--limit", type=int, default=20)
    cancel = commands.add_parser("cancel", help="cancel a run")
    cancel.add_argument("run_id")
    cancel.add_argument("--reason", default="")
    for name, helptext in (("logs", "a run's steps"), ("diff", "a run's diff")):
        commands.add_parser(name, help=helptext).add_argument("run_id")
    files = commands.add_parser("artifacts", help="list a run's artifacts, or download one")
    files.add_argument("run_id")
    files.add_argument("name", nargs="?", help="download this artifact")
    files.add_argument("--out", type=Path, help="write the download here (default: standard output)")
    browse = commands.add_parser("files", help="list a run's workspace files, or download one")
    browse.add_argument("run_id")
    browse.add_argument("path", nargs="?", help="download this file")
    browse.add_argument("--out", type=Path, help="write the download here (default: standard output)")
    projects = commands.add_parser("projects", help="list, show or create projects")
    projects.add_argument("action", choices=("ls", "show", "create", "archive"))
    projects.add_argument("project_id", nargs="?")
    projects.add_argument("--name")
    projects.add_argument("--path", help="create: a directory on the executors' machine")
    projects.add_argument("--git", help="create: a git URL")
    patterns = commands.add_parser("patterns", help="list, show, preview, edit, retire or restore patterns")
    patterns.add_argument("action", choices=("ls", "show", "preview", "edit", "retire", "restore"))
    patterns.add_argument("pattern_id", nargs="?")
    patterns.add_argument("--name", help="edit: a new name")
    patterns.add_argument("--summary", help="edit: a new summary")
    patterns.add_argument(
        "--steps", type=Path, help='edit: a JSON file of steps [{"kind", "text", "target"}]'
    )
    patterns.add_argument("--reason", default="", help="retire/restore: why")
    commands.add_parser("sql", help="read-only SQL over the read models").add_argument("statement")
    commands.add_parser("stats", help="dashboard summary")
    commands.add_parser("templates", help="the run templates")


async def dispatch(args: argparse.Namespace, settings: ClientSettings) -> int:
    if args.command == "templates":
        for name, template in sorted(TEMPLATES.items()):
            print(f"{name:<18} {template['task_type']:<9} {template['description']}")
        return 0
    async with Client(settings) as api:
        match args.command:
            case "run":
                return await _run(api, args)
            case "watch":
                return await watch(api, args.run_id, args.json)
            case "cancel":
                path = f"/v1/runs/{args.run_id}/cancel"
                return _print(await api.post(path, {"reason": args.reason} if args.reason else {}), args.json)
            case _:
                data = await _read(api, args)
                if not args.json and (tables := _tables(args, data)) is not None:
                    print(tables)
                    return 0
                return _print(data, args.json)


async def _run(api: Client, args: argparse.Namespace) -> int:
    instructions = args.instructions
    if args.template:
        instructions = f"{TEMPLATES[args.template]['instructions']}\n\n{instructions}".strip()
    if not instructions:
        print("swarm: error: give instructions or --template", file=sys.stderr)
        return 2
    limits = {"deadline_seconds": args.deadline, "max_tokens": args.max_tokens}
    body: dict[str, Any] = {
        "project_id": args.project,
        "instructions": instructions,
        "task_type": args.task_type or (TEMPLATES[args.template]["task_type"] if args.template else None),
        "reference_run_id": args.reference_run,
        "from_run_id": args.from_run,
        "pattern_ids": args.pattern,
        "auto_patterns": args.auto_patterns,
        "limits": {name: value for name, value in limits.items() if value is not None},
    }
    body = {name: value for name, value in body.items() if value not in (None, [], False, {})}
    accepted = await api.post("/v1/runs", body, idempotency_key=args.idempotency_key or str(uuid.uuid4()))
    if not args.watch:
        return _print(accepted, args.json)
    if args.json:
        print(json.dumps(accepted), flush=True)  # the first line: the run's id and command
    else:
        print(f"run {accepted['id']} accepted; following it (Ctrl-C stops watching, not the run)", flush=True)
    return await watch(api, accepted["id"], args.json)


async def watch(api: Client, run_id: str, as_json: bool) -> int:
    """Print the run's events as they happen; the exit code is the run's outcome."""
    started = time.monotonic()
    async for frame in api.frames(f"/v1/runs/{run_id}/events"):
        if as_json:
            print(json.dumps(frame), flush=True)
        elif frame["type"] == "event" and (text := _line(frame["event"])):
            print(f"[{time.monotonic() - started:5.1f}s] {text}", flush=True)
        elif frame["type"] == "ready" and not frame.get("recovered", True):
            print("warning: early events of this run are no longer in the log", file=sys.stderr)
        if frame["type"] == "end":
            return EXIT.get(str(frame["status"]).removeprefix("run."), 1)
    return 1


def _line(event: dict[str, Any]) -> str | None:
    try:
        decoded = decode_event(json.dumps(event))
    except InvalidMessage:
        return f"? {event.get('type')}"
    return render.line(decoded)  # type: ignore[arg-type]  # a run's subject holds run events


async def _read(api: Client, args: argparse.Namespace) -> Any:
    match args.command:
        case "ls":
            params = {"project_id": args.project, "status": args.status, "task_type": args.task_type}
            return await api.get("/v1/runs", {**params, "limit": args.limit})
        case "show":
            return await api.get(f"/v1/runs/{args.run_id}")
        case "logs":
            return await api.get(f"/v1/runs/{args.run_id}/steps", {"limit": 500})
        case "diff":
            return (await api.download(f"/v1/runs/{args.run_id}/diff")).decode(errors="replace")
        case "artifacts":
            return await _files(api, args, f"/v1/runs/{args.run_id}/artifacts", args.name)
        case "files":
            return await _files(api, args, f"/v1/runs/{args.run_id}/files", args.path)
        case "projects":
            return await _projects(api, args)
        case "patterns":
            return await _patterns(api, args)
        case "sql":
            return await api.post("/v1/sql", {"sql": args.statement})
        case "stats":
            return await api.get("/v1/stats")
    raise AssertionError(args.command)


async def _files(api: Client, args: argparse.Namespace, listing: str, name: str | None) -> Any:
    if name is None:
        return await api.get(listing)
    data = await api.download(f"{listing}/{name}")
    if args.out:
        args.out.write_bytes(data)
        return f"wrote {len(data)} bytes to {args.out}"
    sys.stdout.buffer.write(data)
    return None


async def _projects(api: Client, args: argparse.Namespace) -> Any:
    match args.action:
        case "ls":
            return await api.get("/v1/projects")
        case "show":
            return await api.get(f"/v1/projects/{args.project_id}")
        case "archive":
            return await api.post(f"/v1/projects/{args.project_id}/archive", {}, wait=10)
    source = {"kind": "git", "url": args.git} if args.git else {"kind": "local", "path": args.path}
    return await api.post("/v1/projects", {"name": args.name, "source": source}, wait=10)


async def _patterns(api: Client, args: argparse.Namespace) -> Any:
    if args.action == "ls":
        return await api.get("/v1/patterns")
    if not args.pattern_id:
        raise ApiError(0, "usage", f"`swarm patterns {args.action}` needs a pattern id")
    path = f"/v1/patterns/{args.pattern_id}"
    match args.action:
        case "show":
            return await api.get(path)
        case "preview":
            return (await api.download(f"{path}/preview")).decode()
        case "edit":
            changes = {"name": args.name, "summary": args.summary}
            if args.steps:
                changes["steps"] = json.loads(args.steps.read_text())
            return await api.patch(path, {key: value for key, value in changes.items() if value is not None})
    return await api.post(f"{path}/{args.action}", {"reason": args.reason} if args.reason else {}, wait=10)


_COLUMNS = {
    "ls": ("run_id", "status", "task_type", "progress_pct", "duration_ms", "tokens_in", "tokens_out"),
    "projects": ("project_id", "name", "status", "source_kind", "default_task_type"),
    "patterns": ("pattern_id", "name", "task_type", "version", "status", "uses", "success_rate", "uplift"),
}


def _tables(args: argparse.Namespace, data: Any) -> str | None:
    """Lists and the dashboard as aligned text tables; `None` for what is better shown as JSON."""
    if args.command == "stats":
        return "\n\n".join(f"{name}\n{_table(rows)}" for name, rows in data.items() if rows)
    columns = _COLUMNS.get(args.command)
    if columns is None or getattr(args, "action", "ls") != "ls" or not isinstance(data, dict):
        return None
    return _table([{column: item.get(column) for column in columns} for item in data.get("items", [])])


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    columns = list(rows[0])
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)) for line in lines
    )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


def _print(data: Any, as_json: bool) -> int:
    if data is None:
        return 0
    if isinstance(data, str) and not as_json:
        print(data, end="" if data.endswith("\n") else "\n")
    else:
        print(json.dumps(data, indent=None if as_json else 2, default=str))
    return 0
