"""One run's side of the proxy: its grant, its token budget, and the reports made about it."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Iterator
from typing import Any

import structlog
from aiohttp import web

from executors.proxy._inspect import sandbox_failure
from executors.proxy._reports import BudgetExceeded, Grant, ModelCall, OnReport, Report, SandboxBroken

log = structlog.get_logger(__name__)

Address = str | int  # a unix socket path, or a loopback TCP port


class Run:
    """One run's grant, listeners, token budget and what has been reported about it."""

    def __init__(self, grant: Grant, max_tokens: int | None, on_report: OnReport) -> None:
        self.grant = grant
        self.max_tokens = max_tokens
        self.used = 0
        self.exhausted = False
        self.sandbox_reported = False
        self.sites: list[web.SockSite] = []
        self.addresses: list[Address] = []
        self._on_report = on_report
        self._authorization = f"Bearer {grant.token}".encode()
        self._in_flight: set[asyncio.Task[Any]] = set()

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """Count the current request handler as a call in flight while the block runs."""
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            yield
        finally:
            self._in_flight.discard(task)

    async def settled(self, grace: float) -> None:
        """Wait up to `grace` seconds for the calls in flight to finish and be reported (no error after)."""
        others = self._in_flight - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=grace)

    def admits(self, authorization: str | None) -> bool:
        """Whether the request's `Authorization` header carries this run's token (constant time)."""
        given = (authorization or "").encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._authorization)

    async def check_sandbox(self, body: bytes) -> None:
        """Report `SandboxBroken` the first time a request's tool output shows the failure."""
        if self.sandbox_reported or (detail := sandbox_failure(body)) is None:
            return
        self.sandbox_reported = True
        log.warning("proxy_sandbox_broken", run_id=self.grant.run_id, detail=detail)
        await self.report(SandboxBroken(run_id=self.grant.run_id, detail=detail))

    async def account(self, call: ModelCall) -> None:
        """Report the call, and `BudgetExceeded` once when it takes the run to its token limit."""
        self.used += call.usage.input_tokens + call.usage.output_tokens
        crossed = self.max_tokens is not None and self.used >= self.max_tokens and not self.exhausted
        self.exhausted = self.exhausted or crossed
        await self.report(call)
        if crossed and self.max_tokens is not None:
            log.warning(
                "proxy_budget_exceeded", run_id=self.grant.run_id, used=self.used, limit=self.max_tokens
            )
            await self.report(BudgetExceeded(run_id=self.grant.run_id, used=self.used, limit=self.max_tokens))

    async def report(self, report: Report) -> None:
        """Hand a report to the run's callback; its failure is logged, never passed to the client."""
        try:
            await self._on_report(report)
        except Exception:  # the callback is the caller's code: a failure there must not break the proxy
            log.exception("proxy_report_failed", run_id=self.grant.run_id, report=type(report).__name__)
