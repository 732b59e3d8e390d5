"""The tenant feed's filters: by project (run events are mapped to their project) and by event type.

Run events do not carry their project; the feed learns it from the `run.start` commands it sees and,
for runs started before the socket opened, asks the read model once per run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

import bus
from gateway import queries
from gateway.problems import Problem
from schemas import InvalidMessage, StartRun, decode_command, subjects
from schemas.queries import GetRun
from schemas.types import ProjectId

_TYPE = re.compile(r"^[a-z_]{1,32}(\.[a-z_]{0,32})?$")
_HIDDEN = "key."  # key events stay out of the feed: they are the admins' business
_MAX_KNOWN = 50_000


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    project_id: str | None = None
    types: tuple[str, ...] = ()  # exact types (`run.succeeded`) or prefixes ending in a dot (`run.`)

    @classmethod
    def of(cls, query: Mapping[str, str]) -> Filters:
        project_id = query.get("project_id")
        if project_id is not None:
            try:
                msgspec.convert(project_id, ProjectId)
            except msgspec.ValidationError:
                raise Problem("invalid-request", "project_id is not a project id") from None
        types = tuple(t for t in query.get("types", "").split(",") if t)
        if len(types) > 20 or not all(_TYPE.match(t) for t in types):
            raise Problem("invalid-request", "types: up to 20 event types or prefixes such as `run.`")
        return cls(project_id=project_id, types=types)

    def type_wanted(self, event_type: str) -> bool:
        if event_type.startswith(_HIDDEN):
            return False
        return not self.types or any(
            event_type == t or (t.endswith(".") and event_type.startswith(t)) for t in self.types
        )


class Feed:
    def __init__(self, conn: bus.Connection, tenant: str, filters: Filters) -> None:
        self._conn = conn
        self._tenant = tenant
        self._filters = filters
        self._projects: dict[str, str | None] = {}  # run id -> project id

    async def wanted(self, record: bus.Record, event_type: str) -> bool:
        """Whether this record goes to the client (commands never do; they teach runs' projects)."""
        where = subjects.parse(record.subject)
        if where.kind == "cmd":
            self._learn(record)
            return False
        if not self._filters.type_wanted(event_type):
            return False
        wanted_project = self._filters.project_id
        if wanted_project is None:
            return True
        if where.aggregate == "project":
            return where.id == wanted_project
        return where.aggregate == "run" and await self._project_of(where.id) == wanted_project

    def _learn(self, record: bus.Record) -> None:
        try:
            command = decode_command(record.data)
        except InvalidMessage:
            return
        if isinstance(command, StartRun):
            self._remember(command.run_id, command.project_id)

    async def _project_of(self, run_id: str) -> str | None:
        if run_id not in self._projects:
            try:
                run = await queries.data(self._conn, self._tenant, "get_run", GetRun(run_id=run_id))
                self._remember(run_id, run.get("project_id"))
            except Problem:
                return None  # not known to the read model yet: not counted as the project's
        return self._projects.get(run_id)

    def _remember(self, run_id: str, project_id: str | None) -> None:
        if len(self._projects) >= _MAX_KNOWN:
            self._projects.pop(next(iter(self._projects)))
        self._projects[run_id] = project_id
