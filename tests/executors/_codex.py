"""Driving the real Codex CLI against the scripted model (facts in shared/notes/codex-offline.md)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
CODEX_DIR = ROOT / ".codex-cli"  # git-ignored: the npm install of the pinned CLI and scratch homes
INSTALL = f"npm install --no-save --prefix {CODEX_DIR} @openai/codex@0.169.0"
PROVIDER = "scripted"


@dataclass(frozen=True, slots=True)
class CodexRun:
    """A finished `codex exec --json`: its exit code, decoded JSONL events and stderr."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]

    def completed(self, item_type: str) -> list[dict[str, Any]]:
        """The items of `item_type` in `item.completed` events, in order."""
        items = [event["item"] for event in self.events if event["type"] == "item.completed"]
        return [item for item in items if item["type"] == item_type]

    def last(self, event_type: str) -> dict[str, Any]:
        return [event for event in self.events if event["type"] == event_type][-1]


def codex_binary() -> Path:
    """`$SWARM_CODEX_BIN`, else the project's npm install; missing fails in CI and skips elsewhere."""
    binary = Path(os.environ.get("SWARM_CODEX_BIN") or CODEX_DIR / "node_modules" / ".bin" / "codex")
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        need("codex", f"no Codex CLI at {binary}; install it with: {INSTALL}")
    return binary


@contextmanager
def codex_home(tmp_path: Path) -> Iterator[Path]:
    """A fresh CODEX_HOME outside the temp dir (Codex refuses to set up its helpers under it)."""
    outside = not tmp_path.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    home = tmp_path / "codex-home" if outside else CODEX_DIR / "homes" / uuid.uuid4().hex
    home.mkdir(parents=True)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def write_config(home: Path, base_url: str) -> None:
    """The verified offline config (notes §1.9): no plugins, analytics or retries; only our server."""
    (home / "config.toml").write_text(
        'model = "gpt-5.5"\n'
        f'model_provider = "{PROVIDER}"\n'
        'approval_policy = "never"\n\n'
        "[analytics]\nenabled = false\n\n"
        "[features]\nplugins = false\nunbounded_connection_retries = false\n\n"
        f"[model_providers.{PROVIDER}]\n"
        f'name = "{PROVIDER}"\nbase_url = "{base_url}"\nwire_api = "responses"\n'
        "request_max_retries = 0\nstream_max_retries = 0\nstream_idle_timeout_ms = 30000\n"
    )


async def run_codex(
    binary: Path, home: Path, workspace: Path, script: str, prompt: str, within: float = 30.0
) -> CodexRun:
    """Run `codex exec --json` in `workspace` with the script chosen by header; stdin is closed."""
    headers = f'model_providers.{PROVIDER}.http_headers={{"x-swarm-script"="{script}"}}'
    process = await asyncio.create_subprocess_exec(
        *(str(binary), "exec", "--json", "--strict-config", "--skip-git-repo-check"),
        *("--dangerously-bypass-approvals-and-sandbox", "-c", headers, prompt),
        cwd=workspace,
        env={**os.environ, "CODEX_HOME": str(home)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(within):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    return CodexRun(process.returncode, events, stderr.decode())
