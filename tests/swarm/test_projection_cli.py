"""`swarm up` projects the log; export, snapshot and the drift check work while it runs, rebuild after."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import pytest

import bus
from tests.swarm._up import Up, interrupt, start_up, swarm

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "run_lifecycle.jsonl"


async def _replay_golden(url: str) -> int:
    """Publish the recorded log's messages, unchanged, into a fresh log; return the last sequence."""
    lines = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
    async with bus.connect(bus.Settings(url=url)) as conn:
        for line in lines:
            await conn.js.publish(line["subject"], line["data"].encode())
    return int(lines[-1]["seq"])


async def _projected(env: dict[str, str], seq: int) -> dict[str, object]:
    """The export manifest, once the projection inside `swarm up` has reached `seq`."""
    async with asyncio.timeout(30):
        while True:
            out = Path(env["SWARM_DATA_DIR"]) / f"export-{seq}"
            result = await asyncio.to_thread(swarm, "export", "--parquet", str(out), env=env)
            assert result.returncode == 0, result.stderr
            manifest: dict[str, object] = json.loads((out / "manifest.json").read_text())
            if manifest["last_seq"] == seq:
                return manifest
            await asyncio.sleep(0.2)


@pytest.fixture
async def up(tmp_path: Path) -> AsyncIterator[Up]:
    """`swarm up` with the projector alone: an executor would act on the golden log's commands."""
    running = await start_up(tmp_path / "data", "--roles", "projector")
    yield running
    if running.process.returncode is None:
        running.process.kill()
        await running.process.wait()


async def test_projection_commands_against_a_running_system(up: Up, tmp_path: Path) -> None:
    """Export and snapshot go through the running replica; check finds no drift; rebuild needs it stopped."""
    env = {"SWARM_BUS__URL": up.url, "SWARM_DATA_DIR": str(tmp_path / "data")}
    last = await _replay_golden(up.url)

    manifest = await _projected(env, last)
    tables = manifest["tables"]
    assert isinstance(tables, dict)
    assert tables["runs"]["rows"] == 2
    assert tables["commands"]["rows"] == 4  # create project, two starts, one cancel

    copy = tmp_path / "copy.duckdb"
    assert (await asyncio.to_thread(swarm, "snapshot", str(copy), env=env)).returncode == 0
    with duckdb.connect(str(copy), read_only=True) as snapshot:
        statuses = snapshot.execute("SELECT status FROM runs ORDER BY status").fetchall()
    assert statuses == [("cancelled",), ("succeeded",)]

    check = await asyncio.to_thread(swarm, "projector", "check", "--json", env=env)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["clean"] is True

    busy = await asyncio.to_thread(swarm, "projector", "rebuild", env=env)
    assert busy.returncode == 2
    assert "in use" in busy.stderr
    assert "Traceback" not in busy.stderr
    assert await interrupt(up) == 0
