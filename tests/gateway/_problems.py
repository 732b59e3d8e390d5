"""Checking that an answer is a problem+json of the expected status and type, with no internals."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientResponse

FORBIDDEN_WORDS = ("Traceback", 'File "', "nats", "duckdb", "Exception")


async def problem(response: ClientResponse, status: int, slug: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = await response.json(content_type=None)
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    text = str(body)
    assert not any(word in text for word in FORBIDDEN_WORDS), text
    return body
