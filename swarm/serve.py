"""`swarm gateway`: one gateway replica against `bus.url`, and the `swarm keys ...` operator commands."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

import msgspec

import bus
import gateway
from schemas.types import KeyId, TenantId
from swarm import keys
from swarm.roles import settle_heap, stop_on_signals
from swarm.settings import Settings


async def gateway_replica(settings: Settings) -> int:
    """Serve the gateway until Ctrl-C or SIGTERM."""
    stop = stop_on_signals()
    async with bus.connect(settings.bus, name="swarm-gateway") as conn:
        await conn.provision()
        await gateway.run(conn, settings.gateway, stop, ready=_listening)
    return 0


def _listening(url: str) -> None:
    settle_heap()  # the app is built: what it allocated stays out of every later collection
    print(f"gateway on {url}", flush=True)


class KeysError(Exception):
    """A `swarm keys` argument is not valid."""


async def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    tenant = _checked(args.tenant, TenantId, "--tenant")
    async with bus.connect(settings.bus, name="swarm-keys") as conn:
        await conn.provision()
        match args.keys:
            case "bootstrap":
                issued = await keys.bootstrap(conn, tenant, force=args.force)
                if issued is None:
                    print(f"tenant {tenant} already has an admin key; --force creates another")
                    return 1
                return _show(issued, args.json)
            case "create":
                expires = datetime.fromisoformat(args.expires) if args.expires else None
                return _show(
                    await keys.create(conn, tenant, args.name, args.role, expires_at=expires), args.json
                )
            case "revoke":
                key_id = _checked(args.key_id, KeyId, "KEY_ID")
                if not await keys.revoke(conn, tenant, key_id, args.reason):
                    print(f"no active key {key_id} in tenant {tenant}")
                    return 1
                print(f"revoked {key_id}")
                return 0
            case _:
                for state in await keys.listing(conn, tenant):
                    until = state.expires_at.isoformat() if state.expires_at else "never"
                    print(
                        f"{state.key_id}  {state.role:<8}  {state.status:<7}  expires {until}  {state.name}"
                    )
                return 0


def _show(issued: keys.Issued, as_json: bool) -> int:
    if as_json:
        print(json.dumps(msgspec.to_builtins(issued)))
    else:
        print(f"{issued.role} key {issued.key_id} for tenant {issued.tenant} (shown once, keep it safe):")
        print(issued.token)
    return 0


def _checked(value: str, kind: object, what: str) -> str:
    try:
        return str(msgspec.convert(value, kind))
    except msgspec.ValidationError as exc:
        raise KeysError(f"{what} {value!r} is not valid: {exc}") from None


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser("gateway", help="run a gateway replica (REST, WebSocket relay, console)")
    managing = commands.add_parser("keys", help="create, list, revoke API keys; bootstrap an admin key")
    actions = managing.add_subparsers(dest="keys", required=True)
    for name, text in (
        ("bootstrap", "create the tenant's first admin key and print it once"),
        ("create", "create a key and print it once"),
        ("list", "list a tenant's keys (never their secrets)"),
        ("revoke", "revoke a key"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--tenant", required=True)
        if name in {"bootstrap", "create"}:
            action.add_argument("--json", action="store_true", help="print the key as JSON")
        if name == "bootstrap":
            action.add_argument("--force", action="store_true", help="even if an admin key exists")
        if name == "create":
            action.add_argument("--name", required=True)
            action.add_argument("--role", required=True, choices=("admin", "operator", "analyst", "viewer"))
            action.add_argument(
                "--expires", help="ISO 8601 time with an offset, e.g. 2027-01-01T00:00:00+00:00"
            )
        if name == "revoke":
            action.add_argument("key_id", metavar="KEY_ID")
            action.add_argument("--reason", default="")
