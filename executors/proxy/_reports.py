"""What the proxy is given (the upstream, a run's grant) and what it reports about each run.

Errors::

    ProxyError
    ├── RunAlreadyOpen   open_run for a run id that already has listeners
    └── BadRunId         a run id that cannot name a socket directory (or makes its path too long)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeAlias

import msgspec

from schemas import Usage


@dataclass(frozen=True, slots=True)
class Upstream:
    """The real model endpoint. `api_key` goes upstream as `Authorization: Bearer` and nowhere else.

    `timeout` is the longest wait for the upstream, in seconds: to connect, and between two reads of
    the answer (like the `openai` SDK's timeout, so a long stream that keeps flowing is not cut).
    """

    base_url: str
    api_key: str = field(default="", repr=False)
    timeout: float = 600.0


@dataclass(frozen=True, slots=True)
class Grant:
    """A run's endpoint: a unix socket (and `base_url` when a loopback TCP listener was asked for).

    Requests must carry `Authorization: Bearer <token>`; the token is valid only on this run's
    listeners.
    """

    run_id: str
    token: str = field(repr=False)
    socket: Path
    base_url: str | None = None


class ModelCall(msgspec.Struct, frozen=True, kw_only=True):
    """One proxied request and what it cost.

    `status` is the HTTP status the client got (502/504 when the upstream failed before answering);
    `usage` and `model` come from the answer's `response.completed` / `.failed` / `.incomplete` event
    (or its JSON body), the model falling back to the request's. The bodies are the raw bytes as the
    client sent and received them. `error` is non-empty when the call broke (upstream unreachable,
    timed out, or cut mid-stream); a client hanging up early is not an error.
    """

    run_id: str
    path: str
    model: str
    status: int
    latency_ms: int
    usage: Usage
    request_body: bytes
    response_body: bytes
    started_at: datetime
    error: str = ""


class BudgetExceeded(msgspec.Struct, frozen=True, kw_only=True):
    """The run's input plus output tokens reached its limit; its further requests are refused (429)."""

    run_id: str
    used: int
    limit: int


class SandboxBroken(msgspec.Struct, frozen=True, kw_only=True):
    """Tool output sent back to the model shows that Codex's own sandbox failed to start.

    `detail` is the tool-output line that matched (notes/codex-offline.md §3: the failure is visible
    only there, Codex itself carries on).
    """

    run_id: str
    detail: str


Report: TypeAlias = ModelCall | BudgetExceeded | SandboxBroken
OnReport: TypeAlias = Callable[[Report], Awaitable[None]]


class ProxyError(Exception):
    """The root of the proxy's errors."""


class RunAlreadyOpen(ProxyError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} already has a model endpoint")
        self.run_id = run_id


class BadRunId(ProxyError):
    def __init__(self, run_id: str, problem: str) -> None:
        super().__init__(f"run id {run_id!r}: {problem}")
        self.run_id = run_id
        self.problem = problem
