"""The production NATS configuration in deploy/ is accepted by the real nats-server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import bus

NATS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "nats"
SECRETS = ("GATEWAY_PASSWORD", "EXECUTOR_PASSWORD", "PROJECTOR_PASSWORD", "ADMIN_PASSWORD", "SYSTEM_PASSWORD")


def test_cluster_node_config_is_valid(server_settings: bus.ServerSettings) -> None:
    """`nats-server -t` accepts node.conf with its accounts once the environment supplies the secrets."""
    env = {**os.environ, "NODE_NAME": "nats-1", "CLUSTER_ROUTES": "nats://nats-2:6222"}
    env |= {name: f"secret-{name.lower()}" for name in SECRETS}
    assert server_settings.binary is not None
    result = subprocess.run(
        [server_settings.binary, "-t", "-c", "node.conf"],
        cwd=NATS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout + result.stderr
