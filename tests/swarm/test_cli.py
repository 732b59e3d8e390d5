"""The `swarm` command end to end: `up` in a subprocess, `audit verify`, `schema`, and clear errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

import bus
import schemas
from schemas import Kind
from tests.swarm._up import SWARM, Up, in_a_terminal, interrupt, podman_pids, server_pids, start_up, swarm

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample-repo"


def _start_command(tenant: str = "acme") -> schemas.StartRun:
    ids = schemas.IdSource()
    return schemas.StartRun(
        id=ids.new(Kind.COMMAND),
        at=NOW,
        tenant=tenant,
        actor="key_test",
        run_id=ids.new(Kind.RUN),
        project_id=ids.new(Kind.PROJECT),
        instructions="add a test",
    )


async def _first_event(conn: bus.Connection, subject: str) -> schemas.AnyEvent:
    async with asyncio.timeout(30):
        async for record in conn.log.follow(subject):
            return schemas.decode_event(record.data)
    raise AssertionError("no event")


async def test_up_serves_stops_cleanly_and_resumes(up: Up, tmp_path: Path) -> None:
    """`swarm up` serves the API, a CLI run completes, Ctrl-C leaves nothing, a restart shows the run."""
    data_dir = tmp_path / "data"
    api, key = str(up.ready["api_url"]), str(up.ready["admin_key"])
    async with aiohttp.ClientSession() as http, http.get(f"{api}/healthz") as health:
        assert health.status == 200
    cli = {"SWARM_CLIENT__URL": api, "SWARM_CLIENT__KEY": key}
    created = await asyncio.to_thread(
        swarm, "projects", "create", "--name", "sample", "--path", str(SAMPLE), "--json", env=cli
    )
    assert created.returncode == 0, created.stderr
    project_id = json.loads(created.stdout)["id"]
    ran = await asyncio.to_thread(
        swarm, "run", "[script:hello] say hello", "--project", project_id, "--watch", "--json", env=cli
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    frames = [json.loads(line) for line in ran.stdout.splitlines()]
    assert frames[-1]["type"] == "end"
    run_id = frames[0]["id"]
    assert "run.command_executed" in [frame.get("event_type") for frame in frames]
    failed = await asyncio.to_thread(
        swarm, "run", "[script:fail] break", "--project", project_id, "--watch", env=cli
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "✘ failed (codex_error)" in failed.stdout
    watched = await asyncio.to_thread(in_a_terminal, [*SWARM, "watch", run_id], cli)
    assert watched.returncode == 0
    assert "▶ started" in watched.output
    assert "✔ succeeded" in watched.output
    assert (
        watched.output.index("▶ started") < watched.output.index("$ ") < watched.output.index("✔ succeeded")
    )
    async with aiohttp.ClientSession() as http, http.get(str(up.ready["console_url"])) as page:
        assert page.status == 200
        assert "codex-swarm console" in await page.text()
    listed = await asyncio.to_thread(swarm, "ls", env=cli)
    assert listed.stdout.splitlines()[0].split()[:2] == ["run_id", "status"], listed.stderr
    assert run_id in listed.stdout
    dashboard = await asyncio.to_thread(swarm, "stats", env=cli)
    assert "runs_by_status_day" in dashboard.stdout, dashboard.stderr

    healthy = await asyncio.to_thread(swarm, "status", "--json", env={"SWARM_BUS__URL": up.url})
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    report = json.loads(healthy.stdout)
    assert report["missing"] == []
    assert {"executors", "registry"} <= {consumer["name"] for consumer in report["stream"]["consumers"]}
    last_seq = report["stream"]["last_seq"]
    assert server_pids(data_dir)

    assert await interrupt(up) == 0
    assert server_pids(data_dir) == []
    assert podman_pids(data_dir) == []

    again = await start_up(data_dir)
    try:
        assert again.ready["last_seq"] == last_seq
        assert "admin_key" not in again.ready  # shown once, on the first start only
        cli["SWARM_CLIENT__URL"] = str(again.ready["api_url"])
        shown = await asyncio.to_thread(swarm, "show", run_id, "--json", env=cli)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["status"] == "succeeded"
    finally:
        assert await interrupt(again) == 0


async def test_audit_verify_reports_ok_then_the_first_break(up: Up) -> None:
    """`swarm audit verify` passes an intact log and names the sequence of a forged link."""
    command = _start_command()
    ctx = schemas.Context(now=NOW, actor="exe_test")
    executor = schemas.run_state.ExecutorInfo(executor_id="exe_test", sandbox="local")
    started = schemas.run_state.decide(
        schemas.run_state.RunState(run_id=command.run_id), command, ctx, executor
    )
    async with bus.connect(bus.Settings(url=up.url)) as conn:
        # Events only: a start command would be taken by the executor `swarm up` runs.
        position = await conn.log.append_all(started, bus.START)
        env = {"SWARM_BUS__URL": up.url}
        good = await asyncio.to_thread(swarm, "audit", "verify", "--tenant", "acme", env=env)
        assert good.returncode == 0, good.stderr
        assert "OK, 1 messages" in good.stdout

        forged = schemas.RunCancelled(
            id=schemas.IdSource().new(Kind.EVENT),
            at=NOW,
            tenant="acme",
            actor="exe_test",
            run_id=command.run_id,
            cancelled_by="key_test",
        )
        bad_position = await conn.log.append(forged, bus.Position(seq=position.seq, digest="0" * 64))
    bad = await asyncio.to_thread(
        swarm, "audit", "verify", "--tenant", "acme", "--run", command.run_id, "--json", env=env
    )
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    assert report["first_break"]["seq"] == bad_position.seq
    assert report["first_break"]["problem"] == "chain_broken"


def test_schema_export_lists_every_message(tmp_path: Path) -> None:
    """`swarm schema --out` writes a JSON Schema naming every command and event."""
    out = tmp_path / "schema.json"
    result = swarm("schema", "--out", str(out))
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    for union in (schemas.AnyCommand, schemas.AnyEvent):
        for cls in union.__args__:
            assert cls.__name__ in document["$defs"]


def test_errors_are_one_clear_line_without_a_traceback() -> None:
    """A bad setting or an unreachable NATS gives an error and a hint, never a traceback."""
    bad = swarm("config", env={"SWARM_BUS__URLL": "x"})
    assert bad.returncode == 2
    assert "unknown field `urll`" in bad.stderr
    assert "Traceback" not in bad.stderr

    unreachable = swarm(
        "audit", "verify", env={"SWARM_BUS__URL": "nats://127.0.0.1:9", "SWARM_BUS__CONNECT_TIMEOUT": "1"}
    )
    assert unreachable.returncode == 2
    assert "hint:" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


async def test_up_demo_runs_the_sample_project_to_success(tmp_path: Path) -> None:
    """`swarm up --demo` with no model configured runs the sample project offline to a succeeded run."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "swarm.cli", "up", "--data-dir", str(tmp_path / "data"), "--port", "0",
        "--json", "--demo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={key: value for key, value in os.environ.items() if not key.startswith("OPENAI_")},
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(90):
            while not lines or lines[-1]["event"] != "demo":
                lines.append(json.loads(await process.stdout.readline()))
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await process.wait()
    assert lines[0]["model"] == "scripted (offline demo mode)"
    steps = [line["type"] for line in lines if line["event"] == "step"]
    assert steps[0] == "run.started"
    assert "run.files_changed" in steps
    assert "run.command_executed" in steps
    demo = lines[-1]
    assert demo["type"] == "run.succeeded"
    summary = demo["summary"]
    assert isinstance(summary, dict)
    assert summary["files_changed"] == ["greet.sh", "test.sh"]
    assert process.returncode == 0


async def test_audit_replay_prints_a_run_in_order(conn: bus.Connection, bus_settings: bus.Settings) -> None:
    """`swarm audit replay` prints a run's events in order, as JSON lines or readable lines, in a range."""
    command = _start_command()
    ctx = schemas.Context(now=NOW, actor="exe_test")
    executor = schemas.run_state.ExecutorInfo(executor_id="exe_test", sandbox="local")
    started = schemas.run_state.decide(
        schemas.run_state.RunState(run_id=command.run_id), command, ctx, executor
    )
    cancel = schemas.CancelRun(
        id=schemas.IdSource().new(Kind.COMMAND), at=NOW, tenant="acme", actor="key_x", run_id=command.run_id
    )
    running = schemas.run_state.fold(command.run_id, started)  # type: ignore[arg-type]
    ended = schemas.run_state.decide(running, cancel, ctx)
    at = await conn.log.append_all(started, bus.START)
    last = await conn.log.append_all(ended, at)
    env = {"SWARM_BUS__URL": bus_settings.url}
    scope = ("--tenant", "acme", "--run", command.run_id)
    as_json = await asyncio.to_thread(swarm, "audit", "replay", *scope, "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [line["message"]["type"] for line in lines] == ["run.started", "run.cancelled"]
    assert [line["seq"] for line in lines] == [at.seq, last.seq]
    pretty = await asyncio.to_thread(swarm, "audit", "replay", *scope, "--until-seq", str(at.seq), env=env)
    assert pretty.returncode == 0, pretty.stderr
    assert "run.started" in pretty.stdout
    assert "run.cancelled" not in pretty.stdout


async def test_status_names_the_roles_without_replicas(
    conn: bus.Connection, bus_settings: bus.Settings
) -> None:
    """With only NATS running, `swarm status` shows the log and exits 1 naming the missing projector."""
    result = await asyncio.to_thread(swarm, "status", env={"SWARM_BUS__URL": bus_settings.url})
    assert result.returncode == 1
    assert "stream SWARM: 0 messages" in result.stdout
    assert "MISSING   projector" in result.stdout


def test_completion_script_is_valid_bash_and_knows_the_commands() -> None:
    """`swarm completion bash` prints a script bash accepts, naming commands and their options."""
    result = swarm("completion", "bash")
    assert result.returncode == 0, result.stderr
    assert "complete -o default -F _swarm swarm" in result.stdout
    assert "--auto-patterns" in result.stdout
    assert " up " in result.stdout
    checked = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-n"],
        input=result.stdout,
        text=True,
        capture_output=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_templates_are_listed_with_their_task_types() -> None:
    """`swarm templates` lists every run template (data in swarm/templates.json)."""
    result = swarm("templates")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == sorted(
        ["test", "lint", "format", "document", "analyse", "refactor", "security-review", "dependency-update"]
    )


async def test_keys_commands_bootstrap_create_list_and_revoke(bus_settings: bus.Settings) -> None:
    """`swarm keys`: bootstrap once, create, list without secrets, revoke; a bad tenant is a clear error."""
    env = {"SWARM_BUS__URL": bus_settings.url}
    first = await asyncio.to_thread(swarm, "keys", "bootstrap", "--tenant", "acme", "--json", env=env)
    assert first.returncode == 0, first.stderr
    admin = json.loads(first.stdout)
    again = await asyncio.to_thread(swarm, "keys", "bootstrap", "--tenant", "acme", "--json", env=env)
    assert again.returncode == 1
    assert "already has an admin key" in again.stdout
    made = await asyncio.to_thread(
        swarm, "keys", "create", "--tenant", "acme", "--name", "ci", "--role", "viewer", "--json", env=env
    )
    assert made.returncode == 0, made.stderr
    viewer = json.loads(made.stdout)
    listed = await asyncio.to_thread(swarm, "keys", "list", "--tenant", "acme", env=env)
    assert listed.returncode == 0, listed.stderr
    assert viewer["key_id"] in listed.stdout
    assert viewer["token"] not in listed.stdout
    assert admin["token"] not in listed.stdout
    revoked = await asyncio.to_thread(swarm, "keys", "revoke", "--tenant", "acme", viewer["key_id"], env=env)
    assert revoked.returncode == 0, revoked.stderr
    bad = await asyncio.to_thread(swarm, "keys", "list", "--tenant", "Not A Tenant", env=env)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
