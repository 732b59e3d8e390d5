"""How a run invokes the pinned Codex CLI: its CODEX_HOME configuration and its command line.

The configuration is the offline-safe one measured in shared/notes/codex-offline.md §1.9: one model
provider (the executor's model proxy), no plugins, no analytics, no endless reconnects, approvals off.
Codex's own sandbox is bypassed because the run's sandbox (container or bubblewrap) is the boundary.
"""

from __future__ import annotations

import json
from pathlib import Path

PROVIDER = "swarm"
TOKEN_VARIABLE = "SWARM_RUN_TOKEN"  # noqa: S105  # a variable name; Codex sends its value to the proxy


def config(base_url: str, model: str, retries: int = 0, idle_ms: int = 300_000) -> str:
    """config.toml for a run: `base_url` is the model proxy as seen from inside the sandbox."""
    return "\n".join(
        [
            f"model = {json.dumps(model)}",
            f"model_provider = {json.dumps(PROVIDER)}",
            'approval_policy = "never"',
            "",
            "[analytics]",
            "enabled = false",
            "",
            "[features]",
            "plugins = false",
            "unbounded_connection_retries = false",
            "",
            f"[model_providers.{PROVIDER}]",
            f"name = {json.dumps(PROVIDER)}",
            f"base_url = {json.dumps(base_url)}",
            'wire_api = "responses"',
            f"env_key = {json.dumps(TOKEN_VARIABLE)}",
            f"request_max_retries = {retries}",
            f"stream_max_retries = {retries}",
            f"stream_idle_timeout_ms = {idle_ms}",
            "",
        ]
    )


def write_home(home: Path, base_url: str, model: str, retries: int = 0, idle_ms: int = 300_000) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config(base_url, model, retries, idle_ms))


def command(prompt: str) -> tuple[str, ...]:
    """`codex exec --json` with approvals off; the sandbox backend closes stdin."""
    return (
        "codex",
        "exec",
        "--json",
        "--strict-config",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "--",
        prompt,
    )
