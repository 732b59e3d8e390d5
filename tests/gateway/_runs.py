"""A run's events written straight to the log, as an executor would append them (no Codex needed)."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime
from typing import Any

import bus
from schemas import (
    AgentMessage,
    ArtifactStored,
    Body,
    IdSource,
    Kind,
    RunStarted,
    RunSucceeded,
    RunSummary,
)

ids = IdSource()
EXECUTOR = "exe_test"


def _envelope(tenant: str) -> dict[str, Any]:
    return {"id": ids.new(Kind.EVENT), "at": datetime.now(UTC), "tenant": tenant, "actor": EXECUTOR}


class FakeExecutor:
    """Appends one run's events in order with optimistic concurrency, like the real executor."""

    def __init__(self, conn: bus.Connection, tenant: str, run_id: str) -> None:
        self._conn = conn
        self._tenant = tenant
        self._run_id = run_id
        self.at = bus.START
        self.seqs: list[int] = []

    async def _append(self, event: Any) -> int:
        self.at = await self._conn.log.append(event, self.at)
        self.seqs.append(self.at.seq)
        return self.at.seq

    async def start(self) -> int:
        return await self._append(
            RunStarted(
                **_envelope(self._tenant),
                run_id=self._run_id,
                attempt=1,
                executor_id=EXECUTOR,
                sandbox="none",
            )
        )

    async def message(self, n: int, text: str | None = None) -> int:
        body = Body(text=f"step {n}" if text is None else text)
        return await self._append(
            AgentMessage(**_envelope(self._tenant), run_id=self._run_id, item_id=f"i{n}", text=body)
        )

    async def artifact(self, name: str, kind: Any, data: bytes, media_type: str) -> int:
        blob = await self._conn.blobs.put(data, media_type)
        return await self._append(
            ArtifactStored(**_envelope(self._tenant), run_id=self._run_id, name=name, kind=kind, blob=blob)
        )

    async def succeed(self) -> int:
        summary = RunSummary(goal="test")
        return await self._append(
            RunSucceeded(**_envelope(self._tenant), run_id=self._run_id, summary=summary)
        )


def workspace_archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
