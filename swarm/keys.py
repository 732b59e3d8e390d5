"""`swarm keys ...`: API keys from the operator's machine, straight on the log (no gateway needed).

Each command is sent to the log (so it is audited like any other) and decided at once with the
registry's own handler, so it takes effect even when no registry replica is running; a registry that
later takes the same command finds it already done.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

import bus
from executors.registry import handle_key, load_key
from gateway import new_secret
from schemas import Context, CreateKey, IdSource, KeyCreated, KeyRevoked, Kind, RevokeKey, Role, decode_event
from schemas.key_state import KeyState, KeyStatus, evolve

ACTOR = "sys_cli"
_ids = IdSource()


class Issued(msgspec.Struct, frozen=True, kw_only=True):
    """A new key: `token` is the secret, shown once and kept nowhere."""

    key_id: str
    token: str
    tenant: str
    role: str
    name: str


async def create(
    conn: bus.Connection, tenant: str, name: str, role: Role, *, expires_at: datetime | None = None
) -> Issued:
    key_id = _ids.new(Kind.KEY)
    token, secret_hash = new_secret(key_id)
    command = CreateKey(
        id=_ids.new(Kind.COMMAND),
        at=datetime.now(UTC),
        tenant=tenant,
        actor=ACTOR,
        origin="swarm keys",
        key_id=key_id,
        name=name,
        role=role,
        secret_hash=secret_hash,
        expires_at=expires_at,
    )
    await conn.log.send(command)
    await _decide(conn, command)
    return Issued(key_id=key_id, token=token, tenant=tenant, role=role, name=name)


async def bootstrap(
    conn: bus.Connection, tenant: str, *, name: str = "bootstrap", force: bool = False
) -> Issued | None:
    """The first admin key of `tenant`; `None` when it already has a usable admin key (unless `force`).

    `swarm up` calls this on start: the key is printed once, and a restart creates no second one.
    """
    if not force and any(
        k.role == "admin" and k.usable(datetime.now(UTC)) for k in await listing(conn, tenant)
    ):
        return None
    return await create(conn, tenant, name, "admin")


async def revoke(conn: bus.Connection, tenant: str, key_id: str, reason: str = "") -> bool:
    """Revoke a key of `tenant`; False when there is no such active key."""
    command = RevokeKey(
        id=_ids.new(Kind.COMMAND),
        at=datetime.now(UTC),
        tenant=tenant,
        actor=ACTOR,
        origin="swarm keys",
        key_id=key_id,
        reason=reason,
    )
    _, current = await load_key(conn, tenant, key_id)
    if current.status is not KeyStatus.ACTIVE:
        return False
    await conn.log.send(command)
    await _decide(conn, command)
    _, after = await load_key(conn, tenant, key_id)
    return after.status is KeyStatus.REVOKED


async def _decide(conn: bus.Connection, command: CreateKey | RevokeKey) -> None:
    """Decide `command` at once. A registry replica takes the same command from the log; when it
    appended first, deciding again on what it wrote finds it done."""
    context = Context(now=datetime.now(UTC), actor=ACTOR, ids=_ids)
    try:
        await handle_key(conn, command, context)
    except bus.ConcurrencyConflict:
        await handle_key(conn, command, context)


async def listing(conn: bus.Connection, tenant: str) -> list[KeyState]:
    """Every key of `tenant`, folded from its key events (the secret hashes included: not for display)."""
    keys: dict[str, KeyState] = {}
    async for record in conn.log.read(f"swarm.{tenant}.evt.key.>"):
        event = decode_event(record.data)
        if isinstance(event, KeyCreated | KeyRevoked):
            keys[event.key_id] = evolve(keys.get(event.key_id) or KeyState(key_id=event.key_id), event)
    return sorted(keys.values(), key=lambda k: k.key_id)
