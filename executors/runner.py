"""One started run: workspace, sandbox, Codex's output as events, artifacts, exactly one terminal event.

prepare workspace ─▶ open model grant ─▶ sandbox: codex exec --json ─▶ artifacts ─▶ terminal event
                                           ▲ stopped early by: cancel, deadline, idle, budget,
                                             event/byte limit, Codex's own sandbox failing
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

import bus
from executors import codex, workspace
from executors.proxy import BudgetExceeded, Grant, ModelCall, ModelProxy, Report, SandboxBroken
from executors.run_log import Fenced, RunLog, Stop
from executors.sandbox import Backend, Exit, Resources, SandboxError, Spec
from executors.sandbox.base import MODEL_PORT, Sandbox
from executors.settings import Settings
from executors.translate import Translator
from schemas import (
    AppliedPattern,
    ArtifactStored,
    CommandRun,
    FailureReason,
    LocalSource,
    ModelCallRecorded,
    PatternApplied,
    RunCancelled,
    RunFailed,
    RunSucceeded,
    RunSummary,
    RunTimedOut,
    StartRun,
    WorkspacePrepared,
)
from schemas.project import Source
from schemas.run import RunEvents

log = structlog.get_logger(__name__)

_SANDBOX_URL = "http://127.0.0.1:{port}/v1"


@dataclass(frozen=True, slots=True)
class Services:
    """What every run of one executor shares."""

    conn: bus.Connection
    settings: Settings
    backend: Backend
    proxy: ModelProxy


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the run's files come from: the project's source, or an earlier run's workspace archive."""

    source: Source | None = None
    archive: bytes | None = None


class Run:
    """The part of a run after `run.started` was appended; `stop()` may be called at any time."""

    def __init__(
        self,
        services: Services,
        command: StartRun,
        runs: RunLog,
        directory: Path,
        *,
        prompt: str | None = None,
        applied: Sequence[AppliedPattern] = (),
    ) -> None:
        self._services = services
        self._prompt = prompt or command.instructions  # with the task type's template and any patterns
        self._applied = list(applied)
        self.succeeded = False
        self._settings = services.settings
        self._command = command
        self._runs = runs
        self._directory = directory
        self._stopped: asyncio.Future[Stop] = asyncio.get_running_loop().create_future()
        self._translator = Translator(command.run_id, runs.envelope, services.conn.blobs.body)
        self._transcript: list[bytes] = []
        self._baseline = ""
        self._files_changed: list[str] | None = None

    @property
    def run_id(self) -> str:
        return self._command.run_id

    def stop(self, why: Stop) -> None:
        """Stop the run for this reason, unless it is already being stopped for another."""
        if not self._stopped.done():
            self._stopped.set_result(why)

    async def execute(self, origin: Origin) -> None:
        """Run to the end and append the terminal event; a `Fenced` run writes nothing more."""
        try:
            terminal = await self._terminal_of(origin)
            await self._runs.append(terminal)
            self.succeeded = isinstance(terminal, RunSucceeded)
        except Fenced as exc:
            log.warning("run_fenced", run_id=self.run_id, expected=exc.expected, actual=exc.actual)
        finally:
            if not self._settings.keep_workspaces:
                await asyncio.to_thread(shutil.rmtree, self._directory, True)

    async def _terminal_of(self, origin: Origin) -> RunEvents:
        try:
            await self._prepare(origin)
        except workspace.WorkspaceError as exc:
            return self._failed(FailureReason.INVALID_REQUEST, exc.detail, "check the project's source")
        if self._stopped.done():  # cancelled while preparing: no sandbox
            return self._ending(self._stopped.result(), Exit(code=None))
        if self._applied:
            await self._runs.append(PatternApplied(**self._runs.envelope(), patterns=self._applied))
        try:
            why, exit_ = await self._sandboxed()
        except SandboxError as exc:
            await self._store_artifacts()
            return self._failed(FailureReason.SANDBOX_ERROR, str(exc), "check the executor's sandbox engine")
        await self._store_artifacts()
        return self._ending(why, exit_)

    async def _prepare(self, origin: Origin) -> None:
        target = self._directory / "workspace"
        if origin.archive is not None:
            prepared = await workspace.from_archive(origin.archive, target)
        elif isinstance(origin.source, LocalSource):
            prepared = await workspace.from_local(origin.source, target)
        elif origin.source is not None:
            prepared = await workspace.from_git(origin.source, target)
        else:
            raise workspace.WorkspaceError("the run has neither a project source nor a source run")
        self._baseline = prepared.baseline_commit
        source = prepared.source
        await self._runs.append(
            WorkspacePrepared(
                **self._runs.envelope(),
                source=source,  # type: ignore[arg-type]  # one of "local", "git", "run"
                baseline_commit=prepared.baseline_commit,
                files=prepared.files,
                bytes=prepared.bytes,
                from_run_id=self._command.from_run_id,
            )
        )

    async def _sandboxed(self) -> tuple[Stop | None, Exit]:
        proxy, settings = self._services.proxy, self._settings
        limits = self._command.limits
        tcp = not self._services.backend.safe
        grant = await proxy.open_run(
            self.run_id, max_tokens=limits.max_tokens or settings.max_tokens, on_report=self._report, tcp=tcp
        )
        try:
            spec = self._spec(grant)
            async with self._services.backend.open(spec) as sandbox:
                return await self._watch(sandbox)
        finally:
            await proxy.close_run(self.run_id)

    def _spec(self, grant: Grant) -> Spec:
        settings, home = self._settings, self._directory / "codex-home"
        base_url = grant.base_url if grant.base_url else _SANDBOX_URL.format(port=MODEL_PORT)
        idle_ms = 1000 * (self._command.limits.idle_seconds or settings.idle_seconds)
        codex.write_home(home, base_url, settings.upstream.model, settings.codex_retries, idle_ms)
        sandbox = settings.sandbox
        return Spec(
            run_id=self.run_id,
            command=codex.command(self._prompt),
            workspace=self._directory / "workspace",
            codex_home=home,
            model_socket=grant.socket,
            env={codex.TOKEN_VARIABLE: grant.token},
            resources=Resources(
                memory_bytes=sandbox.memory_mb * 1024 * 1024,
                cpus=sandbox.cpus,
                pids=sandbox.pids,
                file_size_bytes=sandbox.file_size_mb * 1024 * 1024,
            ),
        )

    async def _watch(self, sandbox: Sandbox) -> tuple[Stop | None, Exit]:
        """Pump Codex's output into events until it ends or a stop comes; then wait for the exit."""
        limits, settings = self._command.limits, self._settings
        deadline = limits.deadline_seconds or settings.deadline_seconds
        idle = limits.idle_seconds or settings.idle_seconds
        loop = asyncio.get_running_loop()
        heard = [loop.time()]
        pump = asyncio.create_task(self._pump(sandbox, heard))
        watchdog = asyncio.create_task(self._idle_watch(heard, idle))
        try:
            async with asyncio.timeout(deadline):
                waited: set[asyncio.Future[Any]] = {pump, self._stopped}
                await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            self.stop(Stop("deadline", f"the run passed its deadline of {deadline} s"))
        finally:
            watchdog.cancel()
        why = self._stopped.result() if self._stopped.done() else None
        if why is not None:
            await sandbox.stop(settings.cancel_grace)
        await pump  # ends at the end of output; re-raises Fenced
        return why, await sandbox.wait()

    async def _pump(self, sandbox: Sandbox, heard: list[float]) -> None:
        loop = asyncio.get_running_loop()
        async for line in sandbox.lines():
            heard[0] = loop.time()
            self._transcript.append(line)
            for event in await self._translator.feed(line):
                await self._runs.append(event)

    async def _idle_watch(self, heard: list[float], idle: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            silent = loop.time() - heard[0]
            if silent >= idle:
                self.stop(Stop("idle", f"Codex printed nothing for {idle} s"))
                return
            await asyncio.sleep(idle - silent)

    async def _report(self, report: Report) -> None:
        match report:
            case ModelCall():
                await self._record_call(report)
            case BudgetExceeded(used=used, limit=limit):
                self.stop(Stop("budget", f"the run used {used} tokens of its budget of {limit}"))
            case SandboxBroken(detail=detail):
                self.stop(Stop("sandbox", f"Codex's command sandbox failed: {detail}"))

    async def _record_call(self, call: ModelCall) -> None:
        blobs = self._services.conn.blobs
        request = await blobs.put(call.request_body, "application/json")
        response = await blobs.put(call.response_body, "text/event-stream")
        await self._runs.count_bytes(request.size + response.size)
        await self._runs.append(
            ModelCallRecorded(
                **self._runs.envelope(),
                model=call.model or "unknown",
                status=call.status or 599,
                latency_ms=call.latency_ms,
                usage=call.usage,
                request=request,
                response=response,
            )
        )

    async def _store_artifacts(self) -> None:
        target = self._directory / "workspace"
        if not self._baseline:
            return
        changes = await workspace.changes(target, self._baseline)
        self._files_changed = changes.files
        await self._artifact("diff.patch", "diff", changes.diff, "text/x-diff")
        await self._artifact(
            "codex.jsonl", "transcript", b"\n".join(self._transcript), "application/x-ndjson"
        )
        listing = await asyncio.to_thread(workspace.file_list, target)
        await self._artifact("files.txt", "file_list", listing.encode(), "text/plain; charset=utf-8")
        archive = await asyncio.to_thread(workspace.archive_of, target)
        if len(archive) <= self._settings.archive_limit_mb * 1024 * 1024:
            await self._artifact(ARCHIVE, "other", archive, "application/gzip")

    async def _artifact(self, name: str, kind: str, data: bytes, media_type: str) -> None:
        blob = await self._services.conn.blobs.put(data, media_type)
        await self._runs.count_bytes(blob.size)
        event = ArtifactStored(**self._runs.envelope(), name=name, kind=kind, blob=blob)  # type: ignore[arg-type]
        await self._runs.append(event)

    def _ending(self, why: Stop | None, exit_: Exit) -> RunEvents:
        """The terminal event: why it was stopped, else what Codex's output and exit say."""
        envelope = self._runs.envelope()
        match why:
            case Stop(kind="cancelled"):
                return RunCancelled(**envelope, cancelled_by=why.actor, reason=why.reason)
            case Stop(kind="deadline" | "idle" as limit):
                seconds = self._command.limits.deadline_seconds or self._settings.deadline_seconds
                if limit == "idle":
                    seconds = self._command.limits.idle_seconds or self._settings.idle_seconds
                return RunTimedOut(**envelope, limit=limit, seconds=seconds)
            case Stop(kind="budget"):
                return self._failed(FailureReason.BUDGET_EXCEEDED, why.detail, "raise limits.max_tokens")
            case Stop(kind="limit"):
                return self._failed(
                    FailureReason.LIMIT_EXCEEDED, why.detail, "split the task into smaller runs"
                )
            case Stop(kind="sandbox"):
                return self._failed(FailureReason.SANDBOX_ERROR, why.detail, "check the runner image")
            case None:
                return self._natural_end(exit_)
        raise AssertionError(f"no ending for {why}")

    def _natural_end(self, exit_: Exit) -> RunEvents:
        outcome = self._translator.outcome
        if exit_.oom_killed:
            memory = self._settings.sandbox.memory_mb
            return self._failed(
                FailureReason.SANDBOX_ERROR, f"out of memory ({memory} MB)", "raise the limit"
            )
        if outcome.turn_failed is not None:
            return self._failed(FailureReason.CODEX_ERROR, outcome.turn_failed, "see the run's Codex notices")
        if exit_.code != 0:
            said = exit_.stderr.strip().splitlines()[-1:] or [outcome.last_error]
            detail = f"Codex exited with code {exit_.code}: {said[0][:2000]}"
            return self._failed(FailureReason.NONZERO_EXIT, detail, "see the run's transcript artifact")
        if outcome.turns_completed == 0:
            detail = "Codex exited without completing its turn"
            return self._failed(FailureReason.CODEX_ERROR, detail, "see the run's transcript artifact")
        return RunSucceeded(**self._runs.envelope(), summary=self._summary())

    def _summary(self) -> RunSummary:
        outcome = self._translator.outcome
        return RunSummary(
            goal=self._command.instructions,
            files_changed=(self._files_changed or outcome.files)[:1000],
            commands=[CommandRun(command=c.command, exit_code=c.exit_code) for c in outcome.commands[:500]],
            final_message=outcome.final_message[:64_000],
            usage=outcome.usage,
        )

    def _failed(self, reason: FailureReason, detail: str, suggestion: str) -> RunFailed:
        return RunFailed(
            **self._runs.envelope(), reason=reason, detail=detail[:64_000], suggestion=suggestion
        )


ARCHIVE = "workspace.tar.gz"
