"""The edge: problem+json for every kind of error, and the operations endpoints."""

from __future__ import annotations

import asyncio

from tests.gateway._problems import problem
from tests.gateway.conftest import System


async def test_every_kind_of_error_is_problem_json(system: System) -> None:
    """Bad path parameters, unknown fields, bad JSON, wrong media type, unknown routes and methods."""
    auth, client = system.auth(), system.client
    await problem(await client.get("/v1/runs/not-a-run", headers=auth), 400, "invalid-request")
    await problem(await client.get("/v1/runs?colour=red", headers=auth), 400, "invalid-request")
    unknown = {"name": "x", "source": {"kind": "local", "path": "/x"}, "extra": 1}
    await problem(await client.post("/v1/projects", json=unknown, headers=auth), 400, "invalid-request")
    await problem(
        await client.post("/v1/projects", data=b"{", headers=auth | {"Content-Type": "application/json"}),
        400,
        "invalid-request",
    )
    await problem(
        await client.post("/v1/projects", data=b"name=x", headers=auth | {"Content-Type": "text/plain"}),
        415,
        "unsupported-media-type",
    )
    await problem(await client.get("/v1/nothing", headers=auth), 404, "not-found")
    await problem(await client.delete("/v1/runs", headers=auth), 405, "method-not-allowed")
    await problem(await client.get("/v1/runs/run_01M8AP4QT6Z4G17DGQC04EZRAF", headers=auth), 404, "not-found")
    await problem(
        await client.post("/v1/sql", json={"sql": "DROP TABLE runs"}, headers=auth), 400, "invalid-request"
    )


async def test_operations_endpoints(system: System) -> None:
    """/healthz, /readyz (with a projector answering), /metrics and /openapi.json answer without a key."""
    client = system.client
    assert (await client.get("/healthz")).status == 200
    async with asyncio.timeout(10):  # ready once the key cache has read the log: poll, as a prober does
        while (ready := await client.get("/readyz")).status != 200:
            assert ready.status == 503, await ready.text()
            await asyncio.sleep(0.05)
    assert (await ready.json())["checks"] == {"nats": True, "stream": True, "keys": True, "projector": True}
    await client.get("/v1/runs", headers=system.auth())
    text = await (await client.get("/metrics")).text()
    assert 'swarm_gateway_requests_total{method="GET",route="/v1/runs",status="200"}' in text
    assert "swarm_gateway_websockets_open 0" in text
    document = await (await client.get("/openapi.json")).json()
    assert document["paths"]["/v1/runs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "StartRunBody" in document["components"]["schemas"]
