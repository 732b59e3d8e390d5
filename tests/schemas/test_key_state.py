"""The pure key lifecycle: create once, revoke once, a redelivered create changes nothing, expiry at use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas import Context, CreateKey, IdSource, Kind, Rejected, RevokeKey, key_state

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ids = IdSource()
KEY = ids.new(Kind.KEY)


def create(expires_at: datetime | None = None) -> CreateKey:
    return CreateKey(
        id=ids.new(Kind.COMMAND),
        at=NOW,
        tenant="acme",
        actor="sys_cli",
        key_id=KEY,
        name="ci",
        role="operator",
        secret_hash="ab" * 32,
        expires_at=expires_at,
    )


def test_create_revoke_and_refusals() -> None:
    """A key is created once and revoked once; a second create or revoke is refused with the reason."""
    ctx = Context(now=NOW, actor="sys_registry")
    command = create()
    state = key_state.fold(KEY, key_state.decide(key_state.KeyState(key_id=KEY), command, ctx))
    assert state.status is key_state.KeyStatus.ACTIVE
    assert key_state.decide(state, command, ctx) == []  # the same command again: already done
    with pytest.raises(Rejected, match="already exists"):
        key_state.decide(state, create(), ctx)
    revoke = RevokeKey(id=ids.new(Kind.COMMAND), at=NOW, tenant="acme", actor="sys_cli", key_id=KEY)
    revoked = key_state.evolve(state, key_state.decide(state, revoke, ctx)[0])
    assert not revoked.usable(NOW)
    with pytest.raises(Rejected, match="already revoked"):
        key_state.decide(revoked, revoke, ctx)


def test_a_key_is_unusable_from_its_expiry() -> None:
    """`usable` is true before `expires_at` and false from it on."""
    ctx = Context(now=NOW)
    state = key_state.fold(
        KEY, key_state.decide(key_state.KeyState(key_id=KEY), create(NOW + timedelta(hours=1)), ctx)
    )
    assert state.usable(NOW)
    assert not state.usable(NOW + timedelta(hours=1))
