"""The README's first command, `./bootstrap.sh up`, sets everything up and completes the demo run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def test_the_first_command_completes_the_demo_run(tmp_path: Path) -> None:
    """`./bootstrap.sh up` (free ports, a temp data directory) installs, starts and runs the demo."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "SWARM_"))}
    process = await asyncio.create_subprocess_exec(
        "bash", str(ROOT / "bootstrap.sh"), "up", "--port", "0", "--api-port", "0",
        "--data-dir", str(tmp_path / "data"), "--json",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    events: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(600):
            while not events or events[-1].get("event") != "demo":
                line = await process.stdout.readline()
                assert line, "bootstrap.sh up ended before the demo did"
                if line.startswith(b"{"):
                    events.append(json.loads(line))
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            await process.wait()
    ready = events[0]
    assert ready["event"] == "ready"
    assert ready["model"] == "scripted (offline demo mode)"
    assert str(ready["sandbox"]).startswith("container")
    assert events[-1]["type"] == "run.succeeded"
    assert process.returncode == 0
