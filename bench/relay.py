"""Relay: run events through JetStream → gateway → WebSocket against raw aiohttp broadcasting the same
frames to the same number of watchers, in one run.

One embedded nats-server; the gateway (`python -m swarm.cli gateway`) and the baseline (this file with
`--raw-server`: an aiohttp app with no middleware that broadcasts each frame to every socket) in child
processes; the watchers in a third child per phase; the publisher in this process.

- **gateway**: each phase starts a run (a `StartRun` on the log, no executor); N watchers open
  `/v1/runs/{id}/events` with first-frame auth; the publisher appends `run.agent_message` events one in
  flight, as an executor does (`WirePublisher`: `Log.append`'s bytes and headers from a blocking socket).
- **raw**: N watchers open the baseline's socket; the baseline encodes the same `AgentMessage` event per
  frame, in the gateway's frame shape, and sends it to every socket.

Each phase runs at a fixed rate (`--rate`, the issue's 1k events/s) and then as fast as each side goes.
Latency is the frame's arrival in the watcher's socket (the kernel's receive time, `SO_TIMESTAMPNS`)
minus the event's `at`, stamped just before its append or send; the time to the watcher's read of it is
printed beside it. Deliveries/s is every watcher's events over the time from the first event to the last
read. The watchers are a minimal WebSocket client on a plain epoll loop (frame headers and the `at`
field only), written in C (`bench/watch.c`, compiled with `cc -O2` at start) so that on a machine where
clients and servers share the cores they take as little as a client can: about half the CPU of the same
client in Python, which is kept (`--python-watchers`, and used when there is no C compiler). The
gateway, the baseline, the publisher and the Python watchers each freeze their start-up heap, as the
product's long-running roles do.
**Clients as on other machines**: the watchers and the fixed-rate publisher are scheduled `SCHED_BATCH`,
so their wake-ups (one per frame received, one per acknowledgement) do not preempt the servers on the two
cores they all share; they still run on any idle core. `--clients-share-cpu` measures without that, with
`Log.append` publishing in this process's event loop.
**Idle memory**: `--idle` sockets are opened and authenticated on a quiet run; the server's RSS before and
after, divided by the number of sockets.

    .venv/bin/python bench/relay.py [--watchers 10,100] [--rate 1000] [--seconds 3] [--burst 3000]
                                    [--idle 1000] [--rounds 1] [--clients-share-cpu] [--python-watchers]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import logging
import os
import resource
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import msgspec
import structlog
from aiohttp import WSMsgType, web

import bus
from bus.log import EXPECTED_LAST_SUBJECT_SEQ, MSG_ID
from bus.record import DIGEST
from schemas import AgentMessage, Body, IdSource, Kind, StartRun, encode, subjects
from schemas.chain import digest
from swarm import keys

TENANT = "bench"
ACTOR = "exe_bench"
TEXT = "I ran the tests; two failures remain in the parser, fixing the off-by-one now. " * 3
_AT = b'"at":"'
_SO_TIMESTAMPNS = 35  # Linux: each read also says when its bytes reached the socket (SCM_TIMESTAMPNS)
_STAMP = socket.CMSG_SPACE(16)  # struct timespec
_IN_FLIGHT = 64


def more_files() -> None:
    """Raise this process's open-file limit to the hard limit (1,000 sockets need more than 1,024 fds)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# The watcher child: `relay.py --watch SPEC` opens its sockets, says `connected` once each has its first
# frame, `ready` once each has its warm-up event, then reports one `Seen` line when every watcher has its
# events. Idle (no events): it holds the sockets until its stdin closes.


class Spec(msgspec.Struct, frozen=True, kw_only=True):
    url: str  # ws://host:port/path
    auth: str  # the first frame to send, or "" for none
    watchers: int
    events: int  # measured events, after one warm-up event; 0: idle sockets, held until stdin closes
    timeout: float
    isolated: bool  # scheduled as a client (`as_client`)


class Seen(msgspec.Struct, frozen=True, kw_only=True):
    received: int
    latencies_ms: list[float]  # to the frame's arrival in the watcher's socket
    read_latencies_ms: list[float]  # to the watcher's read of it
    last: float  # wall clock of the last receipt
    cpu: float
    closes: list[int]  # close codes seen before the end


def masked(opcode: int, data: bytes) -> bytes:
    """One masked client frame (the payloads sent here are under 64 KiB)."""
    mask, n = os.urandom(4), len(data)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return bytes([0x80 | opcode]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class Watcher:
    """One watcher: a minimal WebSocket client on a plain non-blocking socket, fed by the child's epoll
    loop (no asyncio), so each read is parsed in one pass at little cost (frame headers and the `at`
    field only). The warm-up event readies it, the next `events` are timed; every frame of one read
    shares that read's receipt time."""

    def __init__(self, url: str, auth: str, events: int, closes: list[int]) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self.receipts: list[tuple[float, float, bytes]] = []  # arrival, read, the event's `at` as sent
        self.last = 0.0
        self.connected = False  # the first frame (ready) arrived: the socket is live
        self.warm = False
        self.done = False
        self._auth, self._events, self._closes = auth, events, closes
        self._buffer = bytearray()
        self._upgraded = False

    def readable(self, now: float) -> None:
        try:
            data, stamps, _, _ = self.sock.recvmsg(1 << 18, _STAMP)
        except BlockingIOError:
            return
        if not data:
            self.finish()
            return
        arrived = now
        for level, kind, stamp in stamps:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(stamp) >= 16:
                seconds, nanoseconds = struct.unpack_from("qq", stamp)
                arrived = seconds + nanoseconds / 1e9
        buffer = self._buffer
        buffer += data
        at = 0
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buffer[: buffer.find(b"\r\n")]:
                raise SystemExit(f"no upgrade: {bytes(buffer[:200])!r}")
            self._upgraded, at = True, end + 4
            if self._auth:
                self.sock.sendall(masked(0x1, self._auth.encode()))
        size = len(buffer)
        while size - at >= 2:
            opcode, n, head = buffer[at] & 0x0F, buffer[at + 1] & 0x7F, 2
            if n == 126:
                if size - at < 4:
                    break
                n, head = buffer[at + 2] << 8 | buffer[at + 3], 4
            elif n == 127:
                if size - at < 10:
                    break
                n, head = int.from_bytes(buffer[at + 2 : at + 10], "big"), 10
            if size - at < head + n:
                break
            begin, at = at + head, at + head + n
            if opcode == 0x1:
                self.connected = True
                self._saw(buffer, begin, at, arrived, now)
            elif opcode == 0x9:
                self.sock.sendall(masked(0xA, bytes(buffer[begin:at])))
            elif opcode == 0x8:
                self._closes.append(int.from_bytes(buffer[begin : begin + 2], "big"))
                self.finish()
                return
        del buffer[:at]

    def _saw(self, buffer: bytearray, begin: int, end: int, arrived: float, now: float) -> None:
        at = buffer.find(_AT, begin, end)
        if at < 0 or self.done:
            return  # ready and position frames
        if not self.warm:
            self.warm = True
            return
        # Kept as received; parsed once the phase is over, so the client spends little per frame.
        self.receipts.append((arrived, now, bytes(buffer[at + 6 : buffer.index(b'"', at + 6)])))
        self.last = now
        if len(self.receipts) >= self._events:
            self.finish()

    def latencies(self, *, read: bool = False) -> list[float]:
        """Milliseconds from each timed event's `at` to its arrival in the socket (or to its read)."""
        return [
            ((now if read else arrived) - datetime.fromisoformat(at.decode()).timestamp()) * 1_000
            for arrived, now, at in self.receipts
        ]

    def finish(self) -> None:
        self.connected = self.warm = self.done = True


def watch(spec: Spec) -> Seen:
    more_files()
    if spec.isolated:
        as_client()
    closes: list[int] = []
    watchers = [Watcher(spec.url, spec.auth, spec.events, closes) for _ in range(spec.watchers)]
    poll = select.epoll()
    by_fd = {}
    for watcher in watchers:
        watcher.sock.setblocking(False)
        poll.register(watcher.sock.fileno(), select.EPOLLIN)
        by_fd[watcher.sock.fileno()] = watcher

    def until(reached: Callable[[Watcher], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = [w for w in watchers if not reached(w)]
        while pending and time.monotonic() < deadline:
            for fd, _ in poll.poll(0.1):
                by_fd[fd].readable(time.time())
            pending = [w for w in pending if not reached(w)]

    until(lambda w: w.connected, 120.0)
    say("connected")
    if spec.events == 0:  # idle sockets: hold them until the parent has measured
        sys.stdin.read()
    until(lambda w: w.warm, 120.0)
    gc.freeze()  # the measuring client: no collection pause of its own in the latencies
    gc.disable()
    say("ready")
    cpu = time.process_time()
    until(lambda w: w.done, spec.timeout)
    cpu = time.process_time() - cpu
    for watcher in watchers:
        watcher.sock.close()
    gc.enable()
    latencies = [ms for w in watchers for ms in w.latencies()]
    return Seen(
        received=len(latencies),
        latencies_ms=latencies,
        read_latencies_ms=[ms for w in watchers for ms in w.latencies(read=True)],
        last=max(w.last for w in watchers),
        cpu=cpu,
        closes=closes,
    )


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# The baseline child: `relay.py --raw-server` serves `/ws` (sockets) and `POST /send` (`Send`).


class Send(msgspec.Struct, frozen=True):
    events: int
    rate: float | None


def frame_of(seq: int, event: AgentMessage) -> bytes:
    """The gateway's event frame for `event`, byte for byte the same shape."""
    return b'{"type":"event","seq":%d,"event_type":"run.agent_message","event":%s}' % (seq, encode(event))


def raw_app() -> web.Application:
    sockets: set[web.WebSocketResponse] = set()
    messages = Messages("run_raw")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        peer = web.WebSocketResponse()
        await peer.prepare(request)
        await peer.send_str('{"type":"ready"}')
        sockets.add(peer)
        try:
            async for _ in peer:
                pass
        finally:
            sockets.discard(peer)
        return peer

    async def send(request: web.Request) -> web.Response:
        order = msgspec.json.decode(await request.read(), type=Send)
        start = time.perf_counter()
        for i in range(order.events):
            if order.rate is not None and (ahead := start + i / order.rate - time.perf_counter()) > 0:
                await asyncio.sleep(ahead)
            frame = frame_of(i + 1, messages.next(i))
            for peer in list(sockets):
                await peer.send_frame(frame, WSMsgType.TEXT)
        return web.Response(text="sent")

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.router.add_post("/send", send)
    return app


async def serve_raw() -> None:
    more_files()
    runner = web.AppRunner(raw_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    gc.collect()  # as the gateway does once it listens (swarm.roles.settle_heap)
    gc.freeze()
    say(f"raw on http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    await asyncio.to_thread(sys.stdin.read)
    await runner.cleanup()


class Messages:
    def __init__(self, run_id: str) -> None:
        self._ids = IdSource()
        self._run_id = run_id

    def next(self, i: int) -> AgentMessage:
        return AgentMessage(
            id=self._ids.new(Kind.EVENT),
            at=datetime.now(UTC),
            tenant=TENANT,
            actor=ACTOR,
            run_id=self._run_id,
            item_id=f"item_{i}",
            text=Body(text=TEXT),
        )


# The parent: nats-server, the gateway and baseline children, a watcher child per phase, the publisher.


@dataclass(frozen=True, slots=True)
class Phase:
    side: str
    watchers: int
    rate: float | None  # events/s offered; None: as fast as the side goes
    events: int
    seen: Seen
    started: float
    sent: float  # wall clock when the last event was appended (gateway) or handed to the sockets (raw)
    server_cpu: float
    server_wait: float  # seconds the server's threads spent runnable, waiting for a core
    busy: float  # the machine's CPU busy while events were sent, in % of both cores

    @property
    def waiting(self) -> float:
        """The server's wait for a core, in % of the phase (its threads summed)."""
        return 100 * self.server_wait / max(1e-9, self.seen.last - self.started)

    @property
    def deliveries(self) -> float:
        return self.seen.received / max(1e-9, self.seen.last - self.started)

    def quantile(self, q: float, *, read: bool = False) -> float:
        ordered = sorted(self.seen.read_latencies_ms if read else self.seen.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def offered(self) -> float:
        return self.events / max(1e-9, self.sent - self.started)

    def cpu_us(self, seconds: float) -> float:
        return seconds / max(1, self.seen.received) * 1e6


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds a process's threads have run, and have spent runnable but waiting for a core, so far
    (`/proc/<pid>/task/*/schedstat`: the scheduler's own clock, exact where 4 ms ticks are not)."""
    ran = waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            fields = (task / "schedstat").read_text().split()
            ran, waited = ran + int(fields[0]), waited + int(fields[1])
    return ran / 1e9, waited / 1e9


def machine() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, in clock ticks (`/proc/stat`: idle and iowait are
    not busy; steal is)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def rss_of(pid: int) -> int:
    """A process's resident set size in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1_024
    raise SystemExit(f"no VmRSS for {pid}")


@contextlib.asynccontextmanager
async def child(
    argv: list[str], env: dict[str, str], banner: str, log: Path
) -> AsyncIterator[tuple[str, int]]:
    """A server child that prints `<banner> <url>` once listening: its URL and pid."""
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=sink,
            preexec_fn=more_files,
        )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        if not line.startswith(banner):
            raise SystemExit(f"{argv[-1]} did not start: {line!r} (see {log})")
        yield line.removeprefix(banner).strip(), process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()


@dataclass(frozen=True, slots=True)
class System:
    conn: bus.Connection
    gateway_url: str
    gateway_pid: int
    raw_url: str
    raw_pid: int
    key: str
    isolated: bool  # the watchers and the fixed-rate publisher run as clients (`as_client`)
    watch: Path | None  # the compiled watcher client (bench/watch.c); None: the Python one (`watch`)


class Publisher:
    """Starts runs and appends their events as an executor does: one append in flight per run, each
    carrying the expected subject sequence and the hash chain."""

    def __init__(self, conn: bus.Connection, *, lean: bool) -> None:
        self._log = conn.log
        self._js = conn.js
        self._url = conn.settings.url
        self._lean = lean
        self._ids = IdSource()
        self._project = self._ids.new(Kind.PROJECT)

    async def new_run(self) -> str:
        run_id = self._ids.new(Kind.RUN)
        await self._log.send(
            StartRun(
                id=self._ids.new(Kind.COMMAND),
                at=datetime.now(UTC),
                tenant=TENANT,
                actor=ACTOR,
                run_id=run_id,
                project_id=self._project,
                instructions="relay benchmark",
            )
        )
        return run_id

    async def append(self, messages: Messages, n: int, rate: float | None, at: bus.Position) -> bus.Position:
        """At `rate`, one append in flight: through `WirePublisher` in a thread of its own (`lean`), or
        `Log.append`; without a rate, as fast as JetStream takes them (`_IN_FLIGHT` plain publishes at
        once), so the relay is what saturates."""
        if rate is None:
            await self._flood(messages, n)
            return at
        if self._lean:
            return await asyncio.to_thread(WirePublisher(self._url).append, messages, n, rate, at)
        start = time.perf_counter()
        for i in range(n):
            if (ahead := start + i / rate - time.perf_counter()) > 0:
                await asyncio.sleep(ahead)
            at = await self._log.append(messages.next(i), at)
        return at

    async def _flood(self, messages: Messages, n: int) -> None:
        slots = asyncio.Semaphore(_IN_FLIGHT)

        async def one(event: AgentMessage) -> None:
            try:
                await self._js.publish(
                    subjects.of_event(event), encode(event), headers={"Nats-Msg-Id": event.id}
                )
            finally:
                slots.release()

        async with asyncio.TaskGroup() as group:
            for i in range(n):
                await slots.acquire()
                group.create_task(one(messages.next(i)))


class WirePublisher:
    """The fixed-rate publisher with little CPU of its own: a blocking socket speaking the NATS protocol,
    so that on a 2-core machine the load generator takes less of the cores the relay needs. Each event
    goes out as `Log.append` sends it (the same bytes, hash chain and headers: message id, expected
    subject sequence, digest) and its acknowledgement is awaited before the next."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 4222)

    def append(self, messages: Messages, n: int, rate: float, at: bus.Position) -> bus.Position:
        as_client()
        with socket.create_connection(self._address) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            replies = sock.makefile("rb")
            if b'"auth_required":true' in replies.readline():
                raise SystemExit("the benchmark's nats-server must not require credentials")
            sock.sendall(
                b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
                b"SUB _BENCH.acks.* 1\r\n"
            )
            start = time.perf_counter()
            for i in range(n):
                if (ahead := start + i / rate - time.perf_counter()) > 0:
                    time.sleep(ahead)
                event = msgspec.structs.replace(messages.next(i), prev_hash=at.digest)
                data = encode(event)
                sha = digest(data)
                head = (
                    f"NATS/1.0\r\n{MSG_ID}: {event.id}\r\n{EXPECTED_LAST_SUBJECT_SEQ}: {at.seq}\r\n"
                    f"{DIGEST}: {sha}\r\n\r\n"
                ).encode()
                subject = subjects.of_event(event).encode()
                sock.sendall(
                    b"HPUB %s _BENCH.acks.%d %d %d\r\n%s%s\r\n"
                    % (subject, i, len(head), len(head) + len(data), head, data)
                )
                at = bus.Position(seq=self._ack(sock, replies), digest=sha)
        return at

    @staticmethod
    def _ack(sock: socket.socket, replies: BinaryIO) -> int:
        """The stream sequence of the next acknowledgement (answering the server's pings meanwhile)."""
        while True:
            line = replies.readline()
            if line.startswith(b"PING"):
                sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                body = replies.read(int(line.split()[-1]) + 2)
                ack = msgspec.json.decode(body)
                if "seq" not in ack:
                    raise SystemExit(f"append refused: {body!r}")
                return int(ack["seq"])
            elif not line or line.startswith(b"-ERR"):
                raise SystemExit(f"nats-server closed the publisher: {line!r}")


def as_client() -> None:
    """Run the calling thread as a benchmark client (`SCHED_BATCH`): its wake-ups do not preempt the
    servers, as they would not if it ran on another machine; it still takes any idle core."""
    os.sched_setscheduler(threading.get_native_id(), os.SCHED_BATCH, os.sched_param(0))


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://", 1) + path


async def spawn_watchers(spec: Spec, binary: Path | None) -> asyncio.subprocess.Process:
    """The watcher child: the compiled client when there is one, else this file's `watch`. Both say
    `connected` and `ready`, then print a `Seen`."""
    if binary is None:
        argv = [sys.executable, __file__, "--watch", msgspec.json.encode(spec).decode()]
    else:
        parts = urlsplit(spec.url)
        host, port, path = parts.hostname or "127.0.0.1", str(parts.port or 80), f"{parts.path}?{parts.query}"
        argv = [str(binary), host, port, path, spec.auth, str(spec.watchers), str(spec.events)]
        argv += [str(spec.timeout), "1" if spec.isolated else "0"]
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )


def build_watcher(into: Path) -> Path | None:
    """Compile bench/watch.c (`cc -O2`); None, with the reason printed, when that cannot be done."""
    binary, compiler = into / "watch", shutil.which("cc")
    if compiler is None:
        print("no C compiler (cc): the watchers are the Python client", file=sys.stderr)
        return None
    compiled = subprocess.run(
        [compiler, "-O2", "-o", str(binary), str(Path(__file__).with_name("watch.c"))],
        capture_output=True,
        text=True,
        check=False,
    )
    if compiled.returncode != 0:
        print(
            f"bench/watch.c did not compile, the watchers are the Python client:\n{compiled.stderr}",
            file=sys.stderr,
        )
        return None
    return binary


async def phase(system: System, side: str, watchers: int, rate: float | None, events: int) -> Phase:
    auth = msgspec.json.encode({"type": "auth", "key": system.key}).decode()
    if side == "gateway":
        publisher = Publisher(system.conn, lean=system.isolated)
        run_id = await publisher.new_run()
        url, first = ws_url(system.gateway_url, f"/v1/runs/{run_id}/events"), auth
    else:
        url, first = ws_url(system.raw_url, "/ws"), ""
    spec = Spec(url=url, auth=first, watchers=watchers, events=events, timeout=60.0, isolated=system.isolated)
    pid = system.gateway_pid if side == "gateway" else system.raw_pid
    watcher = await spawn_watchers(spec, system.watch)
    assert watcher.stdout is not None
    try:
        await expect(watcher.stdout, "connected")
        if side == "gateway":
            messages = Messages(run_id)
            at = await system.conn.log.append(messages.next(0), bus.START)
        else:
            await post(system.raw_url, Send(1, None))
        await expect(watcher.stdout, "ready")
        cpu, wait = schedstat(pid)
        load = machine()
        started = time.time()
        if side == "gateway":
            await publisher.append(messages, events, rate, at)
        else:
            await post(system.raw_url, Send(events, rate))
        sent = time.time()
        busy, total = (now - before for now, before in zip(machine(), load, strict=True))
        seen = msgspec.json.decode(await watcher.stdout.read(), type=Seen)
        ran, waited = schedstat(pid)
        cpu, wait = ran - cpu, waited - wait
    finally:
        with contextlib.suppress(ProcessLookupError):
            watcher.kill()
        await watcher.wait()
    return Phase(side, watchers, rate, events, seen, started, sent, cpu, wait, 100 * busy / max(1, total))


async def post(base: str, order: Send) -> None:
    """Ask the baseline to send `order` and wait until it has handed every frame to its sockets."""
    parts = urlsplit(base)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    body = msgspec.json.encode(order)
    writer.write(
        b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (len(body), body)
    )
    answer = await reader.read()
    writer.close()
    if b" 200 " not in answer.split(b"\r\n", 1)[0]:
        raise SystemExit(f"the baseline refused: {answer[:200]!r}")


async def expect(stream: asyncio.StreamReader, word: str) -> None:
    async with asyncio.timeout(120):
        line = (await stream.readline()).decode().strip()
    if line != word:
        raise SystemExit(f"the watcher child said {line!r}, expected {word!r}")


async def idle(system: System, side: str, sockets: int) -> float:
    """Bytes of server RSS per idle, authenticated socket."""
    auth = msgspec.json.encode({"type": "auth", "key": system.key}).decode()
    if side == "gateway":
        run_id = await Publisher(system.conn, lean=system.isolated).new_run()
        url, pid = ws_url(system.gateway_url, f"/v1/runs/{run_id}/events"), system.gateway_pid
    else:
        url, pid, auth = ws_url(system.raw_url, "/ws"), system.raw_pid, ""
    await asyncio.sleep(0.5)
    before = rss_of(pid)
    watcher = await spawn_watchers(
        Spec(url=url, auth=auth, watchers=sockets, events=0, timeout=120.0, isolated=system.isolated),
        system.watch,
    )
    assert watcher.stdout is not None
    assert watcher.stdin is not None
    try:
        await expect(watcher.stdout, "connected")
        await asyncio.sleep(1.0)
        after = rss_of(pid)
    finally:
        watcher.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            watcher.kill()
        await watcher.wait()
    return (after - before) / sockets


async def measure(system: System, args: argparse.Namespace) -> list[tuple[Phase, Phase]]:
    pairs, flip = [], False
    for _ in range(args.rounds):
        for watchers in args.watchers:
            for rate, events in ((args.rate, int(args.rate * args.seconds)), (None, args.burst)):
                order = ("raw", "gateway") if flip else ("gateway", "raw")
                done = {side: await phase(system, side, watchers, rate, events) for side in order}
                pairs.append((done["gateway"], done["raw"]))
                flip = not flip
    return pairs


def report(pairs: list[tuple[Phase, Phase]], memory: dict[str, float], sockets: int, client: str) -> None:
    print(f"\nwatchers: the {client} client")
    print(
        "\ndeliveries/s: events received by all watchers / (last receipt - first event)\nlatency: the frame's"
        " arrival in the watcher's socket (kernel receive time) - the event's `at`; read99: to the watcher's"
        " read of it\nµs: CPU µs per delivery of the server process (gateway or baseline) and of the watcher"
        " process\nwait: the server's threads' time runnable but waiting for a core, in % of the phase\nbusy:"
        " the machine's CPU time in use (every process, the kernel, steal) while events were sent, in % of"
        " its cores"
    )
    head = (
        f"{'deliv/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'read99':>7} {'srv µs':>6} {'cli µs':>6} {'wait':>5}"
        f" {'busy':>5}"
    )
    print(f"{'watchers':>8} {'offered/s':>9} | gateway {head} | raw {head} | {'ratio':>5} {'lost':>5}")
    for gw, raw in pairs:
        print(
            f"{gw.watchers:>8} {gw.offered:>9,.0f} | gateway {side(gw)} | raw {side(raw)} | {tail(gw, raw)}"
        )
    ratios = [gw.deliveries / raw.deliveries for gw, raw in pairs if gw.rate is None]
    print(f"deliveries/s ratio gateway/raw, as fast as each goes (median): {statistics.median(ratios):.2f}")
    for name, per in memory.items():
        print(f"{name}: {per / 1_024:.1f} KiB of RSS per idle socket ({sockets} sockets)")


def side(p: Phase) -> str:
    return (
        f"{p.deliveries:>9,.0f} {p.quantile(0.5):>7.1f} {p.quantile(0.99):>7.1f}"
        f" {p.quantile(0.99, read=True):>7.1f} {p.cpu_us(p.server_cpu):>6.1f} {p.cpu_us(p.seen.cpu):>6.1f}"
        f" {p.waiting:>4.0f}% {p.busy:>4.0f}%"
    )


def tail(gw: Phase, raw: Phase) -> str:
    lost = gw.watchers * gw.events - gw.seen.received
    closed = f"  closed: {sorted(set(gw.seen.closes))} x{len(gw.seen.closes)}" if gw.seen.closes else ""
    return f"{gw.deliveries / raw.deliveries:>5.2f} {lost:>5}{closed}"


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        async with (
            bus.embedded(bus.ServerSettings(), Path(tmp) / "nats") as server,
            bus.connect(bus.Settings(url=server.url), name="bench-publisher") as conn,
        ):
            await conn.provision()
            issued = await keys.bootstrap(conn, TENANT)
            assert issued is not None
            env = {
                **os.environ,
                "SWARM_BUS__URL": server.url,
                "SWARM_GATEWAY__PORT": "0",
                "SWARM_LOG__LEVEL": "warning",
                "SWARM_DATA_DIR": str(Path(tmp) / "gateway"),
            }
            gateway_argv = [sys.executable, "-m", "swarm.cli", "gateway"]
            raw_argv = [sys.executable, __file__, "--raw-server"]
            async with (
                child(gateway_argv, env, "gateway on ", Path(tmp) / "gateway.log") as (
                    gateway_url,
                    gateway_pid,
                ),
                child(raw_argv, env, "raw on ", Path(tmp) / "raw.log") as (raw_url, raw_pid),
            ):
                system = System(
                    conn,
                    gateway_url,
                    gateway_pid,
                    raw_url,
                    raw_pid,
                    issued.token,
                    isolated=not args.clients_share_cpu,
                    watch=None if args.python_watchers else build_watcher(Path(tmp)),
                )
                gc.collect()  # the publisher stands in for an executor, which settles its heap too
                gc.freeze()
                memory = {}
                if args.idle:
                    memory = {name: await idle(system, name, args.idle) for name in ("gateway", "raw")}
                pairs = await measure(system, args)
    report(pairs, memory, args.idle, "Python" if system.watch is None else "C (bench/watch.c)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--watchers", type=lambda s: [int(n) for n in s.split(",")], default=[10, 100], help="watcher counts"
    )
    parser.add_argument("--rate", type=float, default=1_000.0, help="events/s in the fixed-rate phase")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the fixed-rate phase")
    parser.add_argument("--burst", type=int, default=3_000, help="events sent as fast as each side goes")
    parser.add_argument(
        "--idle", type=int, default=1_000, help="idle sockets for the memory figure (0: skip)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds over every watcher count")
    parser.add_argument(
        "--clients-share-cpu",
        action="store_true",
        help="run the watchers at normal priority and publish with Log.append in this process's loop",
    )
    parser.add_argument(
        "--python-watchers",
        action="store_true",
        help="run the watchers as this file's Python client instead of the compiled bench/watch.c",
    )
    parser.add_argument("--watch", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--raw-server", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    arguments = parse_args()
    if arguments.watch:
        seen = watch(msgspec.json.decode(arguments.watch, type=Spec))
        sys.stdout.buffer.write(msgspec.json.encode(seen))
    elif arguments.raw_server:
        asyncio.run(serve_raw())
    else:
        asyncio.run(main(arguments))
