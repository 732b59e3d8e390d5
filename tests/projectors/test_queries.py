"""Queries over NATS: replicas share the load, min_seq gives read-your-writes, tenants never mix."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import bus
from projectors.projector import Projector
from projectors.queries import BadRequest, NotCaughtUp, NotFound
from projectors.service import query, serve, subject
from projectors.store import open_store
from tests.bus._waits import eventually
from tests.projectors._qdata import ACME, GLOBEX, Seeded, Writer, newest_first, outcome, seed
from tests.projectors._qdata import T0 as QUEUED_FROM


@contextlib.asynccontextmanager
async def replica(settings: bus.Settings, path: Path) -> AsyncIterator[tuple[Projector, bus.Service]]:
    """A whole replica: its own connection, DuckDB file, projector and query service.

    Closes in order: the service stops taking queries, the projector stops, the file, the connection.
    """
    async with bus.connect(settings, name=path.stem) as conn:
        with open_store(path) as store:
            projector = Projector(conn, store)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(projector.run())
                try:
                    async with serve(conn, projector, store) as service:
                        yield projector, service
                finally:
                    projector.shutdown()


@pytest.fixture
async def seeded(conn: bus.Connection) -> tuple[Seeded, Writer]:
    return await seed(conn.log)


@pytest.fixture
async def one(
    bus_settings: bus.Settings, tmp_path: Path, seeded: tuple[Seeded, Writer]
) -> AsyncIterator[tuple[Projector, bus.Service]]:
    async with replica(bus_settings, tmp_path / "one.duckdb") as (projector, service):
        assert await projector.wait_for(seeded[0].last_seq, within=10.0)
        yield projector, service


async def test_two_replicas_share_the_load_and_agree(
    conn: bus.Connection, bus_settings: bus.Settings, tmp_path: Path, seeded: tuple[Seeded, Writer]
) -> None:
    """Forty concurrent queries to two replicas in one queue group: both answer some, all answers agree."""
    data, _ = seeded
    async with (
        replica(bus_settings, tmp_path / "r1.duckdb") as (_, first),
        replica(bus_settings, tmp_path / "r2.duckdb") as (_, second),
    ):
        asks = [query(conn, ACME, "list_runs", min_seq=data.last_seq) for _ in range(40)]
        answers = await asyncio.gather(*asks)
        served = [first.served()["list_runs"], second.served()["list_runs"]]

    assert sum(served) == 40
    assert min(served) > 0, served
    assert all(answer == answers[0] for answer in answers)
    assert [run["run_id"] for run in answers[0]["items"]] == newest_first(data.of(ACME))


async def test_a_query_with_min_seq_waits_for_that_event(
    conn: bus.Connection, seeded: tuple[Seeded, Writer], one: tuple[Projector, bus.Service]
) -> None:
    """A query asking for a sequence not yet written is answered once it is, and sees that event."""
    data, writer = seeded
    _, service = one
    running = data.one(ACME, "running")
    waiting = asyncio.create_task(
        query(conn, ACME, "get_run", {"run_id": running.run_id}, min_seq=data.last_seq + 1, wait_ms=10_000)
    )
    await eventually(_served(service, "get_run", 1))
    assert not waiting.done()

    finished = outcome(dataclasses.replace(running, outcome="succeeded"), QUEUED_FROM)
    assert finished is not None
    assert await writer.append(finished) == data.last_seq + 1
    answer = await asyncio.wait_for(waiting, timeout=10.0)

    assert answer["status"] == "succeeded"
    assert answer["summary"]["goal"] == "fix the tests"


async def test_an_unreachable_min_seq_answers_not_caught_up(
    conn: bus.Connection, seeded: tuple[Seeded, Writer], one: tuple[Projector, bus.Service]
) -> None:
    """A minimum sequence the log never reaches within the wait is refused with `not_caught_up`."""
    data, _ = seeded
    with pytest.raises(NotCaughtUp, match=f"not {data.last_seq + 1000}"):
        await query(conn, ACME, "list_runs", min_seq=data.last_seq + 1000, wait_ms=200)


async def test_a_tenant_sees_only_its_own_rows(
    conn: bus.Connection, seeded: tuple[Seeded, Writer], one: tuple[Projector, bus.Service]
) -> None:
    """Acme's lists, stats and projects hold only Acme's rows, and Globex's ids are not found from Acme."""
    data, _ = seeded
    theirs = data.of(GLOBEX)[0].run_id

    runs = await query(conn, ACME, "list_runs", {"limit": 500})
    projects = await query(conn, ACME, "list_projects")
    stats = await query(conn, ACME, "stats")
    for name in ("get_run", "run_steps", "run_model_calls", "run_artifacts"):
        with pytest.raises(NotFound):
            await query(conn, ACME, name, {"run_id": theirs})
    with pytest.raises(NotFound):
        await query(conn, ACME, "get_project", {"project_id": data.projects[GLOBEX][0]})

    assert {run["run_id"] for run in runs["items"]} == {run.run_id for run in data.of(ACME)}
    assert {row["tenant"] for row in runs["items"] + projects["items"]} == {ACME}
    assert [p["project_id"] for p in projects["items"]] == sorted(data.projects[ACME])
    assert sum(row["runs"] for row in stats["runs_by_status_day"]) == len(data.of(ACME))
    assert stats["failure_reasons"] == [{"failure_reason": "nonzero_exit", "runs": 1}]
    assert {row["project_id"] for row in stats["queue_waits"]} <= set(data.projects[ACME])
    globex = await query(conn, GLOBEX, "list_runs")
    assert [run["run_id"] for run in globex["items"]] == newest_first(data.of(GLOBEX))


async def test_pages_of_two_walk_every_run_once_newest_first(
    conn: bus.Connection, seeded: tuple[Seeded, Writer], one: tuple[Projector, bus.Service]
) -> None:
    """Following `next_cursor` with `limit` 2 yields each run once, newest first, even across a tie."""
    data, _ = seeded
    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = await query(conn, ACME, "list_runs", params)
        pages.append([run["run_id"] for run in page["items"]])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    assert [len(page) for page in pages] == [2, 2, 2]
    assert [run_id for page in pages for run_id in page] == newest_first(data.of(ACME))


async def test_filters_select_the_matching_runs(
    conn: bus.Connection, seeded: tuple[Seeded, Writer], one: tuple[Projector, bus.Service]
) -> None:
    """Status, task type, project and queued-time filters each return exactly the runs that match."""
    data, _ = seeded
    acme = data.of(ACME)
    later = acme[3].queued_at.isoformat()

    async def ids(**params: Any) -> set[str]:
        return {run["run_id"] for run in (await query(conn, ACME, "list_runs", params))["items"]}

    assert await ids(status="failed") == {data.one(ACME, "failed").run_id}
    assert await ids(task_type="research") == {data.one(ACME, "timed_out").run_id}
    assert await ids(project_id=data.projects[ACME][1]) == {
        r.run_id for r in acme if r.project_id == data.projects[ACME][1]
    }
    assert await ids(queued_after=later) == {r.run_id for r in acme if r.queued_at >= acme[3].queued_at}
    assert await ids(queued_before=later) == {r.run_id for r in acme if r.queued_at < acme[3].queued_at}


async def test_a_run_comes_with_its_steps_model_calls_and_artifacts(
    conn: bus.Connection, seeded: tuple[Seeded, Writer], one: tuple[Projector, bus.Service]
) -> None:
    """`get_run` decodes the summary; steps page by sequence; model calls and artifacts are the run's."""
    data, _ = seeded
    run_id = data.one(ACME, "succeeded").run_id

    run = await query(conn, ACME, "get_run", {"run_id": run_id})
    first = await query(conn, ACME, "run_steps", {"run_id": run_id, "limit": 1})
    rest = await query(conn, ACME, "run_steps", {"run_id": run_id, "after_seq": first["next_after_seq"]})
    calls = await query(conn, ACME, "run_model_calls", {"run_id": run_id})
    artifacts = await query(conn, ACME, "run_artifacts", {"run_id": run_id})

    assert (run["status"], run["tokens_in"], run["instructions"]) == ("succeeded", 1_000, "fix the tests")
    assert (run["summary"]["goal"], run["summary"]["final_message"]) == ("fix the tests", "all green")
    assert [s["kind"] for s in first["items"] + rest["items"]] == ["agent_message", "command_executed"]
    assert rest["next_after_seq"] is None
    assert [(c["model"], c["latency_ms"]) for c in calls["items"]] == [("gpt-5-codex", 850)]
    assert [a["name"] for a in artifacts["items"]] == ["changes.diff"]


async def test_projects_and_patterns_list_and_get(
    conn: bus.Connection, seeded: tuple[Seeded, Writer], one: tuple[Projector, bus.Service]
) -> None:
    """Projects filter by status and page by id; the (still empty) pattern tables answer too."""
    data, _ = seeded
    active, archived = data.projects[ACME]

    listed = await query(conn, ACME, "list_projects", {"status": "archived"})
    first = await query(conn, ACME, "list_projects", {"limit": 1})
    project = await query(conn, ACME, "get_project", {"project_id": active})
    patterns = await query(conn, ACME, "list_patterns")

    assert [p["project_id"] for p in listed["items"]] == [archived]
    assert first["next_after"] == min(active, archived)
    assert (project["name"], project["status"], project["source"]) == ("api", "active", "/srv/api")
    assert patterns == {"items": [], "next_after": None}
    with pytest.raises(NotFound):
        await query(conn, ACME, "get_pattern", {"pattern_id": "pat_" + "0" * 26})


@pytest.mark.parametrize(
    ("name", "params", "detail"),
    [
        ("list_runs", {"colour": "red"}, "unknown field `colour`"),
        ("list_runs", {"limit": 10_000}, "<= 500"),
        ("list_runs", {"cursor": "not-a-cursor"}, "cursor"),
        ("list_runs", {"queued_after": "yesterday"}, "queued_after"),
        ("get_run", {"run_id": "run_42"}, "run_id"),
        ("run_steps", {"run_id": "run_" + "0" * 26, "after_seq": -1}, ">= 0"),
        ("get_project", {}, "missing required field `project_id`"),
    ],
)
async def test_bad_params_answer_bad_request_with_a_detail(
    conn: bus.Connection,
    one: tuple[Projector, bus.Service],
    name: str,
    params: dict[str, Any],
    detail: str,
) -> None:
    """Params that do not decode are refused with `bad_request` and a detail that names the problem."""
    with pytest.raises(BadRequest) as refused:
        await query(conn, ACME, name, params)

    assert detail in refused.value.detail


@pytest.mark.parametrize(
    ("subject_", "body", "detail"),
    [
        ("swarmq.ACME.list_runs", b"{}", "tenant 'ACME'"),
        ("swarmq.acme.list_runs", b'{"min_seq": -1}', "min_seq"),
        ("swarmq.acme.list_runs", b'{"wait_ms": 60000}', "<= 30000"),
        ("swarmq.acme.list_runs", b'{"tenant": "globex"}', "unknown field `tenant`"),
        ("swarmq.acme.list_runs", b"{min_seq: 1", "not valid JSON"),
    ],
)
async def test_bad_requests_on_the_wire_answer_bad_request(
    conn: bus.Connection, one: tuple[Projector, bus.Service], subject_: str, body: bytes, detail: str
) -> None:
    """A raw request with a bad tenant token or envelope gets an `ok: false` reply, not silence."""
    reply = msgspec.json.decode(await bus.request(conn, subject_, body, within=5.0))

    assert reply["ok"] is False
    assert reply["error"]["type"] == "bad_request"
    assert detail in reply["error"]["detail"]


async def test_an_unknown_query_is_refused_cleanly(
    conn: bus.Connection, one: tuple[Projector, bus.Service]
) -> None:
    """The client refuses an unknown query name; on the wire, nobody responds to its subject."""
    with pytest.raises(BadRequest, match="unknown query 'drop_tables'"):
        await query(conn, ACME, "drop_tables")
    with pytest.raises(bus.RequestFailed) as failed:
        await bus.request(conn, subject(ACME, "drop_tables"), b"{}", within=5.0)

    assert failed.value.reason == "no_responders"


async def test_the_service_is_discoverable_with_its_endpoints(
    conn: bus.Connection, one: tuple[Projector, bus.Service]
) -> None:
    """`$SRV.INFO.projectors` describes the replica: every query endpoint, in queue group `projectors`."""
    _, service = one
    info = msgspec.json.decode(await bus.request(conn, "$SRV.INFO.projectors", b"", within=5.0))

    assert info["id"] == service.id
    assert {e["name"] for e in info["endpoints"]} >= {"list_runs", "get_run", "stats", "list_patterns"}
    queries = [e for e in info["endpoints"] if not e["name"].startswith("admin_")]
    assert {(e["subject"].split(".")[1], e["queue_group"]) for e in queries} == {("*", "projectors")}
    admin = {e["subject"] for e in info["endpoints"] if e["name"].startswith("admin_")}
    assert admin == {f"swarmadm.projectors.{action}" for action in ("export", "snapshot", "check")}


def _served(service: bus.Service, endpoint: str, count: int) -> Any:
    async def check() -> bool:
        return service.served().get(endpoint, 0) >= count

    return check


async def test_analyst_sql_over_nats_sees_only_the_tenant_and_refuses_files(
    conn: bus.Connection, seeded: tuple[Seeded, Writer], one: tuple[Projector, bus.Service]
) -> None:
    """The `sql` query answers a SELECT with the caller tenant's rows only, and refuses reading files."""
    data, _ = seeded
    answer = await query(conn, ACME, "sql", {"sql": "SELECT run_id, tenant FROM runs ORDER BY run_id"})
    assert answer["columns"] == ["run_id", "tenant"]
    assert {row[1] for row in answer["rows"]} == {ACME}
    assert sorted(row[0] for row in answer["rows"]) == sorted(run.run_id for run in data.of(ACME))

    csv = await query(conn, GLOBEX, "sql", {"sql": "SELECT count(*) AS n FROM runs", "format": "csv"})
    assert csv["csv"].splitlines() == ["n", str(len(data.of(GLOBEX)))]

    with pytest.raises(BadRequest, match="not allowed"):
        await query(conn, ACME, "sql", {"sql": "SELECT * FROM read_csv('/etc/passwd')"})
