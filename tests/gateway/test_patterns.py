"""Pattern curation over REST: an edit is a new version, retire and restore change the status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

import bus
from executors.patterns import Extractor
from executors.settings import Settings as ExecutorSettings
from schemas import IdSource, Kind, PatternExtracted, pattern_id_for, subjects
from schemas.pattern import Content, Provenance, Step
from tests.gateway._problems import problem
from tests.gateway.conftest import TENANT, System

RUN_ID = "run_01JD0000000000000000000001"
PROJECT_ID = "prj_01JD0000000000000000000001"


@pytest.fixture
async def extractor(conn: bus.Connection) -> AsyncIterator[None]:
    """The pattern queue (it decides edit, retire and restore) running beside the gateway."""
    replica = Extractor(conn, ExecutorSettings())
    task = asyncio.create_task(replica.run())
    yield
    await replica.shutdown()
    await task


async def _extracted(conn: bus.Connection) -> str:
    pattern_id = pattern_id_for(RUN_ID)
    content = Content(
        name="greet", goal="add a flag", summary="adds a flag", steps=[Step(kind="command", text="run tests")]
    )
    event = PatternExtracted(
        id=IdSource().new(Kind.EVENT),
        at=datetime.now(UTC),
        tenant=TENANT,
        actor="sys_patterns",
        pattern_id=pattern_id,
        project_id=PROJECT_ID,
        task_type="code",
        content=content,
        provenance=Provenance(
            run_id=RUN_ID, first_seq=1, last_seq=2, extractor_version="test", content_hash=content.digest()
        ),
    )
    await conn.log.append(event, await conn.log.position(subjects.events(TENANT, "pattern", pattern_id)))
    return pattern_id


async def test_edit_retire_and_restore(system: System, extractor: None) -> None:
    """PATCH makes version 2 (version 1 kept); retire and restore answer with their events."""
    pattern_id = await _extracted(system.conn)
    client, auth = system.client, system.auth()
    edited = await client.patch(
        f"/v1/patterns/{pattern_id}?wait=10", json={"summary": "adds a --shout flag"}, headers=auth
    )
    assert edited.status == 200, await edited.text()
    outcome = (await edited.json())["outcome"]
    assert outcome["type"] == "pattern.edited"
    assert outcome["event"]["version"] == 2
    unknown = await client.post(
        f"/v1/patterns/{pattern_id_for('run_01JD0000000000000000000002')}/retire", headers=auth
    )
    await problem(unknown, 404, "not-found")
    restore_active = await client.post(f"/v1/patterns/{pattern_id}/restore", headers=auth)
    await problem(restore_active, 409, "conflict")
    retired = await client.post(
        f"/v1/patterns/{pattern_id}/retire?wait=10", json={"reason": "old"}, headers=auth
    )
    assert (await retired.json())["outcome"]["type"] == "pattern.retired"
    restored = await client.post(f"/v1/patterns/{pattern_id}/restore?wait=10", headers=auth)
    found = await restored.json()
    assert found["outcome"]["type"] == "pattern.restored"
    shown = await client.get(
        f"/v1/patterns/{pattern_id}/preview?min_seq={found['outcome']['seq']}", headers=auth
    )
    assert shown.status == 200, await shown.text()
    block = await shown.text()
    assert block.startswith("<reference_workflow")
    assert "adds a --shout flag" in block
    assert "run tests" in block


async def test_edits_are_validated_and_need_the_command_role(system: System) -> None:
    """Unknown fields are refused; a viewer may not edit."""
    pattern_id = pattern_id_for(RUN_ID)
    bad = await system.client.patch(
        f"/v1/patterns/{pattern_id}", json={"colour": "red"}, headers=system.auth()
    )
    await problem(bad, 400, "invalid-request")
    viewer = await system.key("viewer")
    refused = await system.client.post(f"/v1/patterns/{pattern_id}/retire", headers=system.auth(viewer))
    await problem(refused, 403, "forbidden")
