"""The real pinned Codex CLI inside a sandbox, against the scripted model on the run's model socket."""

from __future__ import annotations

import json
import uuid

import pytest

from executors.sandbox import MODEL_PORT, Backend
from executors.scripted import SCRIPT_HEADER, ScriptedModel
from tests.executors._codex import PROVIDER, write_config
from tests.executors.sandbox.conftest import RunDir, run_to_end, serve_unix

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(params=["container", "bubblewrap"])
def isolating(request: pytest.FixtureRequest) -> Backend:
    found: Backend = request.getfixturevalue(f"{request.param}_backend")
    return found


async def test_codex_completes_a_scripted_turn_in_the_sandbox(isolating: Backend, run_dir: RunDir) -> None:
    """Codex reaches the model through the forwarder, runs the script's command and completes the turn."""
    write_config(run_dir.codex_home, f"http://127.0.0.1:{MODEL_PORT}/v1")
    header = f'model_providers.{PROVIDER}.http_headers={{"{SCRIPT_HEADER}"="hello"}}'
    command = ("codex", "exec", "--json", "--strict-config", "--skip-git-repo-check")
    spec = run_dir.spec(
        f"test-{uuid.uuid4().hex[:12]}",
        *command,
        *("--dangerously-bypass-approvals-and-sandbox", "-c", header, "Create hello.txt"),
    )
    async with serve_unix(ScriptedModel().app(), run_dir.socket):
        lines, exit_ = await run_to_end(isolating, spec, within=60)
    events = [json.loads(line) for line in lines]
    commands = [
        e["item"]
        for e in events
        if e["type"] == "item.completed" and e["item"]["type"] == "command_execution"
    ]
    assert exit_.code == 0, exit_.stderr
    assert [(item["exit_code"], item["status"]) for item in commands] == [(0, "completed")]
    assert events[-1]["type"] == "turn.completed"
    assert (run_dir.workspace / "hello.txt").read_text() == "hello from codex\n"
