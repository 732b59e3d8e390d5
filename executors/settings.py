"""Settings of a run executor replica; decoded once by the process's settings loader."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

CODEX_VERSION = "0.169.0"  # the pinned Codex CLI; the runner image carries the same version
RUNNER_IMAGE = f"localhost/codex-swarm-runner:{CODEX_VERSION}"

Seconds = Annotated[float, Meta(gt=0)]


class Upstream(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The model API the proxy forwards to; the key never enters a sandbox, a log or an event."""

    base_url: str = ""  # empty: no model configured (the offline demo serves the scripted model)
    api_key: str = ""
    model: str = "gpt-5.5"


class Sandbox(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where runs execute. `auto`: the container engine when it answers, else bubblewrap, else a process."""

    backend: Literal["auto", "container", "bubblewrap", "process"] = "auto"
    engine_url: str = "unix:///var/run/docker.sock"  # Docker Engine, or Podman's compatible API socket
    image: str = RUNNER_IMAGE
    codex_binary: str = ""  # the host's Codex CLI, for the local backends; empty: the project's npm install
    memory_mb: Annotated[int, Meta(ge=64)] = 1024
    cpus: Annotated[float, Meta(gt=0)] = 1.0
    pids: Annotated[int, Meta(ge=16)] = 256
    file_size_mb: Annotated[int, Meta(ge=1)] = 1024


class Patterns(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Pattern extraction and selection (README, "Patterns")."""

    extract: bool = True  # a succeeded run asks for its pattern to be extracted
    refine: bool = True  # the upstream model refines the deterministic baseline
    model: str = ""  # the refining model; empty: upstream.model
    refine_timeout: Seconds = 60.0
    auto_max: Annotated[int, Meta(ge=1, le=10)] = 2  # patterns an automatic selection may add
    query_timeout: Seconds = 2.0  # for the projectors' pattern list; past it, no automatic selection
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 2


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    work_dir: str = ""  # empty: <data_dir>/executor (workspaces, Codex homes, model sockets)
    concurrency: Annotated[int, Meta(ge=1, le=256)] = 2  # runs at once in this process
    ack_wait: Seconds = 15.0  # a run's command is redelivered this long after its executor goes silent
    max_deliver: Annotated[int, Meta(ge=1, le=20)] = 5
    deadline_seconds: Annotated[int, Meta(ge=1)] = 1800  # a run's default wall-clock limit
    idle_seconds: Annotated[int, Meta(ge=1)] = 300  # a run's default limit on silence from Codex
    cancel_grace: Seconds = 5.0  # between the graceful signal and the kill
    shutdown_grace: Seconds = 10.0  # runs in flight at shutdown get this long, then are handed back
    max_tokens: Annotated[int, Meta(ge=1)] | None = None  # a run's default token budget (None: none)
    max_events: Annotated[int, Meta(ge=10)] = 10_000  # per run; a warning at 80 %
    max_bytes: Annotated[int, Meta(ge=10_000)] = 64 * 1024 * 1024  # per run, events and artifacts
    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    retry_after_side_effects: bool = False
    keep_workspaces: bool = False  # keep each run's directory after it ends (for debugging)
    archive_limit_mb: Annotated[int, Meta(ge=0)] = 256  # larger workspaces are not archived
    codex_retries: Annotated[int, Meta(ge=0, le=10)] = 0  # Codex's own request retries
    upstream: Upstream = Upstream()
    sandbox: Sandbox = Sandbox()
    patterns: Patterns = Patterns()
