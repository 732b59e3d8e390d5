"""`swarm up`: the embedded system on one machine, supervised by one task group, stopped by a signal.

nats-server (JetStream) ─┬─ projector (DuckDB read models, queries)
                         ├─ executor (Codex runs in sandboxes) + registry (projects)
                         └─ [--demo] a demo project and run, shown live
model: the configured upstream, else the scripted model (offline demo mode)
sandbox: the configured engine, else a Podman API service started here, else bubblewrap
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import structlog

import bus
import gateway
from executors import role as executor_role
from executors.sandbox import Backend, SandboxError, ensure_image, podman_service
from executors.scripted import ScriptedModel
from executors.settings import Settings as ExecutorSettings
from projectors import role as projector_role
from swarm import demo, keys
from swarm.logs import configure
from swarm.roles import settle_heap, stop_on_signals
from swarm.settings import Settings

log = structlog.get_logger(__name__)


ROLES = ("projector", "executor", "gateway")


async def run(
    settings: Settings, *, as_json: bool = False, with_demo: bool = False, roles: tuple[str, ...] = ROLES
) -> int:
    """Start everything under `data_dir`, optionally run the demo, and serve until Ctrl-C or SIGTERM."""
    stop = stop_on_signals()
    data_dir = Path(settings.data_dir)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(bus.embedded(settings.server, data_dir / "nats"))
        bus_settings = msgspec.structs.replace(settings.bus, url=server.url)
        conn = await stack.enter_async_context(bus.connect(bus_settings, name="swarm-up"))
        await conn.provision()
        executor, offline = await _model(stack, settings.executor)
        executor, backend = await _sandbox(stack, executor, data_dir)
        state = (await conn.js.stream_info(bus_settings.stream)).state
        facts: dict[str, Any] = {
            "nats_url": server.url,
            "data_dir": settings.data_dir,
            "projection": settings.projector.database,
            "stream": bus_settings.stream,
            "messages": state.messages,
            "last_seq": state.last_seq,
            "sandbox": f"{backend.name} {backend.version}".strip(),
            "model": "scripted (offline demo mode)" if offline else executor.upstream.base_url,
            "logs": str(data_dir / "logs" / "swarm.log"),
        }
        async with asyncio.TaskGroup() as tasks:
            if "projector" in roles:
                tasks.create_task(projector_role.run(conn, settings.projector, stop))
            if "executor" in roles:
                tasks.create_task(executor_role.run(conn, executor, stop, backend=backend))
            if "gateway" in roles:
                facts |= await _gateway(tasks, conn, settings, stop)
            _announce(facts, as_json)
            settle_heap()
            if with_demo:
                console = facts.get("api_url")
                show = demo.show(conn, offline=offline, as_json=as_json, console=console)
                tasks.create_task(_until_stopped(show, stop))
    print("codex-swarm stopped", flush=True)
    return 0


async def _gateway(
    tasks: asyncio.TaskGroup, conn: bus.Connection, settings: Settings, stop: asyncio.Event
) -> dict[str, Any]:
    """Start the gateway; once it listens, the API URL and, on the first start, the admin key."""
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    tasks.create_task(gateway.run(conn, settings.gateway, stop, ready=listening.set_result))
    url = await listening
    issued = await keys.bootstrap(conn, demo.TENANT)
    facts: dict[str, Any] = {
        "api_url": url,
        "console_url": f"{url}/console/",
        "docs_url": f"{url}/docs",
        "tenant": demo.TENANT,
    }
    if issued is not None:
        facts["admin_key"] = issued.token
    return facts


async def _model(
    stack: contextlib.AsyncExitStack, settings: ExecutorSettings
) -> tuple[ExecutorSettings, bool]:
    """The configured model, else the scripted model server on a free port."""
    if settings.upstream.base_url:
        return settings, False
    model = await stack.enter_async_context(ScriptedModel(default_script="demo"))
    upstream = msgspec.structs.replace(settings.upstream, base_url=model.base_url)
    return msgspec.structs.replace(settings, upstream=upstream), True


async def _sandbox(
    stack: contextlib.AsyncExitStack, settings: ExecutorSettings, data_dir: Path
) -> tuple[ExecutorSettings, Backend]:
    """The sandbox backend; with no container engine but Podman installed, a Podman service of our own."""
    sandbox = settings.sandbox
    wants_engine = sandbox.backend in ("auto", "container")
    if wants_engine and not _engine_present(sandbox.engine_url) and shutil.which("podman"):
        try:
            url = await stack.enter_async_context(podman_service(data_dir / "podman" / "api.sock"))
            _say("checking the runner image (the first start builds it, about a minute)")
            await ensure_image(url, sandbox.image, executor_role.ROOT / ".codex-cli")
        except SandboxError as exc:
            if sandbox.backend == "container":
                raise
            _say(f"warning: no container engine ({exc.detail}); falling back to a local sandbox")
        else:
            sandbox = msgspec.structs.replace(sandbox, engine_url=url)
            settings = msgspec.structs.replace(settings, sandbox=sandbox)
    backend = await executor_role.choose_backend(settings)
    if not backend.safe:
        _say("WARNING: runs execute as plain processes on this machine, with no isolation")
    return settings, backend


@contextlib.contextmanager
def log_file(settings: Settings, *, verbose: bool) -> Iterator[None]:
    """Unless `verbose`, the logs go to `<data_dir>/logs/swarm.log`, so the terminal shows the system."""
    if verbose:
        yield
        return
    path = Path(settings.data_dir) / "logs" / "swarm.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        configure(settings.log, file)
        yield


def _engine_present(url: str) -> bool:
    return not url.startswith("unix://") or Path(url.removeprefix("unix://")).exists()


async def _until_stopped(work: Any, stop: asyncio.Event) -> None:
    """Run `work` unless the system is stopped first (then it is cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, stopped):
        pending.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.result()  # its error, if it failed on its own


def _announce(facts: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"event": "ready", **facts}), flush=True)
        return
    lines = [
        "codex-swarm is up",
        f"  NATS (JetStream)  {facts['nats_url']}",
        f"  data directory    {facts['data_dir']}",
        f"  log               stream {facts['stream']}: {facts['messages']} messages, "
        f"last sequence {facts['last_seq']}",
        f"  read models       {facts['projection']} (queries on swarmq.<tenant>.<query>)",
        f"  sandbox           {facts['sandbox']}",
        f"  model             {facts['model']}",
        f"  logs              {facts['logs']}",
    ]
    if "api_url" in facts:
        lines.append(
            f"  API               {facts['api_url']}/v1 (docs {facts['docs_url']}), tenant {facts['tenant']}"
        )
    if "admin_key" in facts:
        lines += [
            "  admin key         shown once, stored only as a hash; point the CLI at this system with:",
            f"    export SWARM_CLIENT__URL={facts['api_url']} SWARM_CLIENT__KEY={facts['admin_key']}",
        ]
    print("\n".join([*lines, "Press Ctrl-C to stop."]), flush=True)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
