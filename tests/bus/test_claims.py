"""Claims: a name is taken once across connections, and concurrent takers get one success between them."""

from __future__ import annotations

import asyncio

import bus


async def test_a_name_is_taken_once(conn: bus.Connection) -> None:
    """The first take of a name succeeds and every later one fails; other names are independent."""
    assert await conn.claims.take("ticket.one") is True
    assert await conn.claims.take("ticket.one") is False
    assert await conn.claims.take("ticket.two") is True


async def test_racing_connections_get_one_success(conn: bus.Connection, bus_settings: bus.Settings) -> None:
    """Twenty takes of one name from two connections at the same moment: exactly one succeeds."""
    async with bus.connect(bus_settings, name="other") as other:
        takes = [c.claims.take("ticket.raced") for _ in range(10) for c in (conn, other)]
        assert sorted(await asyncio.gather(*takes)) == [False] * 19 + [True]


async def test_the_bucket_forgets_after_claim_hours(conn: bus.Connection, bus_settings: bus.Settings) -> None:
    """The claims bucket keeps a name for `claim_hours`, longer than any ticket lives."""
    info = await conn.js.stream_info(f"KV_{bus_settings.claims_bucket}")
    assert info.config.max_age == bus_settings.claim_hours * 3_600
