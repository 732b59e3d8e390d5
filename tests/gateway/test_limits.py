"""Limits at the edge: per-key rate limits, body sizes, the CORS allow-list and security headers."""

from __future__ import annotations

import pytest

import gateway
from tests.gateway._problems import problem
from tests.gateway.conftest import System


@pytest.fixture
def gateway_settings() -> gateway.Settings:
    return gateway.Settings(
        port=0, rate_per_second=1.0, rate_burst=3, max_body_bytes=2048, cors_origins=("https://ok.example",)
    )


async def test_rate_limit_answers_429_with_retry_after(system: System) -> None:
    """Past its burst a key gets 429 with Retry-After; another key is not affected."""
    statuses = [(await system.client.get("/v1/keys", headers=system.auth())).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = await system.client.get("/v1/keys", headers=system.auth())
    await problem(limited, 429, "rate-limited")
    assert int(limited.headers["Retry-After"]) >= 1
    other = await system.key("viewer")
    assert (await system.client.get("/v1/projects", headers=system.auth(other))).status == 200


async def test_oversize_bodies_are_refused(system: System) -> None:
    """A body over max_body_bytes is refused with 413 before it is decoded."""
    body = {"name": "x" * 4000, "source": {"kind": "local", "path": "/x"}}
    await problem(
        await system.client.post("/v1/projects", json=body, headers=system.auth()), 413, "payload-too-large"
    )


async def test_cors_allow_list_and_security_headers(system: System) -> None:
    """Only listed origins get CORS headers (and preflights); every answer carries the security headers."""
    ok = await system.client.get("/healthz", headers={"Origin": "https://ok.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    assert ok.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in ok.headers["Content-Security-Policy"]
    evil = await system.client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in evil.headers
    pre = await system.client.options(
        "/v1/runs", headers={"Origin": "https://ok.example", "Access-Control-Request-Method": "POST"}
    )
    assert pre.status == 204
    assert "Idempotency-Key" in pre.headers["Access-Control-Allow-Headers"]
