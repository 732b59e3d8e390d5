"""The whole log read by a child process, so that reading it costs the caller's interpreter almost nothing.

`Replay` parses every frame in Python: about 7 µs a message, under the same GIL as whatever the caller
does with the records (a projector's decode, fold and writes take about 20). `Piped` runs the `Replay`
in a child process (`bus._piped.main`) instead. The child writes its chunks to its stdout as
length-prefixed msgpack frames, which the parent decodes straight into `Record`s in C.

Back-pressure is the pipe's. A child whose pipe is full stops taking messages, so it stops answering
flow control and the server stops sending. What is in flight is bounded by the pipe and the server's
window. The child ends when its stdin closes (the parent is gone) or when it reaches the end it was asked
to stop at. A child that dies (killed, crashed) is replaced by one that reads on after the last record
decoded, up to `restarts` times in a row without a record in between; then the reading fails with its
exit status and its last words on stderr. A failure to connect comes back as `WireError` with the
child's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import os
import struct
import sys
from collections import deque

import msgspec
import structlog

from bus._replay import Replay
from bus._wire import WireError
from bus.record import Record
from bus.settings import Settings

_log = structlog.get_logger(__name__)

_LENGTH = struct.Struct(">I")
_PIPE_BYTES = 1 << 20  # the pipe's capacity (Linux allows an unprivileged process up to 1 MiB)
_STDERR_LINES = 20
_RESTARTS = 3  # child deaths in a row, with no record in between, before the reader fails
_GRACE = 5.0  # seconds a closed reader's child has to delete its consumer and exit


class Job(msgspec.Struct, frozen=True, kw_only=True):
    settings: Settings
    after_seq: int
    most: int
    stop_at_end: bool


class Chunk(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    records: list[Record]
    ended: bool
    empty: bool = False  # in the first chunk only: there was nothing to read when the reader opened


class Failed(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    error: str


class _Died(WireError):
    """The child ended without a word: killed, or crashed."""


_reply: msgspec.msgpack.Decoder[Chunk | Failed] = msgspec.msgpack.Decoder(Chunk | Failed)


class Piped:
    """A `Reader` of the whole log whose reading runs in a child process."""

    def __init__(
        self, settings: Settings, after_seq: int, *, most: int, stop_at_end: bool, restarts: int = _RESTARTS
    ) -> None:
        self._job = Job(settings=settings, after_seq=after_seq, most=most, stop_at_end=stop_at_end)
        self._restarts = restarts  # child deaths in a row (no record between them) before giving up
        self._process: asyncio.subprocess.Process | None = None
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES)
        self._drain: asyncio.Task[None] | None = None
        self._first: Chunk | None = None
        self._held: Chunk | Exception | None = None  # taken from the queue, not yet handed out
        self._stdout = asyncio.StreamReader()
        self._pipe: asyncio.ReadTransport | None = None
        # Chunks decoded ahead while the caller works on the last one, until they hold a whole batch
        # (`most` records): a caller that is behind gets full batches, and memory stays flat.
        self._ahead: asyncio.Queue[Chunk | Exception] = asyncio.Queue()
        self._ahead_records = 0
        self._room = asyncio.Event()
        self._fetching: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._first = await self._spawn(self._job.after_seq)
        if not self._first.ended:
            self._fetching = asyncio.ensure_future(self._fetch())

    async def _spawn(self, after_seq: int) -> Chunk:
        """Start a child reading after `after_seq`; its first chunk (no records: whether the log is empty)."""
        loop = asyncio.get_running_loop()
        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError):  # a larger pipe lets the child write whole chunks ahead
            fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _program(),
                stdin=asyncio.subprocess.PIPE,
                stdout=write_end,
                stderr=asyncio.subprocess.PIPE,
                # Its own session: a Ctrl-C or a signal to the replica's process group is the replica's
                # to handle; the child ends when the replica closes its stdin (or dies).
                start_new_session=True,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # the child has its copy: EOF here once it exits
        self._stdout = asyncio.StreamReader(limit=_PIPE_BYTES)
        self._pipe, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(self._stdout), os.fdopen(read_end, "rb", buffering=0)
        )
        assert self._process.stdin is not None
        assert self._process.stderr is not None
        self._drain = asyncio.ensure_future(self._keep_stderr(self._process.stderr))
        # The job goes over stdin, not the command line: it holds the connection's credentials.
        job = msgspec.structs.replace(self._job, after_seq=after_seq)
        self._process.stdin.write(_frame(msgspec.msgpack.encode(job)))
        await self._process.stdin.drain()
        return await self._next()

    async def empty(self) -> bool:
        return self._first is not None and self._first.empty

    async def chunk(self, most: int, *, stop_at_end: bool) -> tuple[list[Record], bool]:
        """The next records, waiting for at least one. The chunks already decoded are joined, up to
        `most`, so a caller that is behind gets full batches; the child was told `stop_at_end`."""
        records: list[Record] = []
        while len(records) < most:
            item = await self._take(wait=not records)
            if item is None:  # nothing more decoded yet
                break
            if isinstance(item, Exception):
                if not records:
                    raise item
                self._held = item  # after the records before it
                break
            room = most - len(records)
            if len(item.records) > room:
                self._held = Chunk(records=item.records[room:], ended=item.ended)
                records.extend(item.records[:room])
                break
            records = item.records if not records else records + item.records
            if item.ended:
                return records, True
        return records, False

    async def _take(self, *, wait: bool) -> Chunk | Exception | None:
        """What comes next: a chunk, or the error that ended the reading; None if `wait` is False and
        nothing is decoded yet."""
        if self._held is not None:
            item, self._held = self._held, None
            return item
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if not wait and self._ahead.empty():
            return None
        item = await self._ahead.get()
        if isinstance(item, Chunk):
            self._ahead_records -= len(item.records)
            if self._ahead_records < self._job.most:
                self._room.set()
        return item

    async def close(self) -> None:
        if self._fetching is not None:
            self._fetching.cancel()
            await asyncio.wait({self._fetching})
        await self._stop_child()

    async def _stop_child(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the child's signal to stop: it deletes its consumer and exits
        try:
            await asyncio.wait_for(process.wait(), _GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        finally:
            if self._pipe is not None:
                self._pipe.close()
            if self._drain is not None:
                self._drain.cancel()
                await asyncio.wait({self._drain})

    async def _fetch(self) -> None:
        last, deaths = self._job.after_seq, 0
        try:
            while True:
                try:
                    chunk = await self._next()
                except _Died as exc:
                    if deaths >= self._restarts:
                        raise
                    deaths += 1  # a child killed or crashed: another one carries on after `last`
                    _log.warning("log_reader_restarted", after_seq=last, reason=str(exc))
                    await self._stop_child()
                    chunk = await self._spawn(last)
                if chunk.records:
                    last, deaths = chunk.records[-1].seq, 0
                self._ahead.put_nowait(chunk)
                self._ahead_records += len(chunk.records)
                if chunk.ended:
                    return
                while self._ahead_records >= self._job.most:  # a whole batch is ready: wait for the caller
                    self._room.clear()
                    await self._room.wait()
        except Exception as exc:  # the caller gets it in order, after the chunks before it
            self._ahead.put_nowait(exc)

    async def _next(self) -> Chunk:
        process = self._process
        assert process is not None, "open() the reader first"
        try:
            (size,) = _LENGTH.unpack(await self._stdout.readexactly(_LENGTH.size))
            reply = _reply.decode(await self._stdout.readexactly(size))
        except asyncio.IncompleteReadError:
            raise await self._died(process) from None
        if isinstance(reply, Failed):
            raise WireError(reply.error)
        return reply

    async def _died(self, process: asyncio.subprocess.Process) -> _Died:
        code = await process.wait()
        if self._drain is not None:
            await asyncio.wait({self._drain}, timeout=1.0)
        said = " | ".join(self._stderr) or "nothing on stderr"
        return _Died(f"the log reader process exited with status {code}: {said}")

    async def _keep_stderr(self, stderr: asyncio.StreamReader) -> None:
        async for line in stderr:
            self._stderr.append(line.decode(errors="replace").rstrip())


def _frame(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


def _program(run: str = "from bus._piped import main\nmain()\n") -> str:
    """The child's program. It imports only the modules it runs: the `bus` and `schemas` packages' own
    modules import nats-py and aiohttp, 0.3 s of CPU before the first chunk. The child gets bare packages
    with the same search paths instead, so `bus._replay` and the rest load on their own."""
    paths = {name: list(importlib.import_module(name).__path__) for name in ("bus", "schemas")}
    return (
        "import sys, types\n"
        f"for name, path in {paths!r}.items():\n"
        "    sys.modules[name] = package = types.ModuleType(name)\n"
        "    package.__path__ = path\n"
        f"{run}"
    )


# The child: `main()`, its `Job` on stdin, `Chunk`s (or one `Failed`) on stdout.


async def _serve(job: Job, out: asyncio.StreamWriter) -> None:
    replay = Replay(job.settings, job.after_seq)
    try:
        await replay.open()
    except WireError as exc:
        out.write(_frame(msgspec.msgpack.encode(Failed(error=str(exc)))))
        await out.drain()
        return
    try:
        empty = await replay.empty()
        ended = job.stop_at_end and empty
        # At once, whatever the log holds: the parent's `open()` returns, and knows whether it is empty.
        out.write(_frame(msgspec.msgpack.encode(Chunk(records=[], ended=ended, empty=empty))))
        while not ended:
            await out.drain()  # a full pipe holds the next chunk back: the server's window does the rest
            records, ended = await replay.chunk(job.most, stop_at_end=job.stop_at_end)
            out.write(_frame(msgspec.msgpack.encode(Chunk(records=records, ended=ended))))
        await out.drain()
    finally:
        await replay.close()


async def _child() -> int:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    out = asyncio.StreamWriter(transport, protocol, None, loop)
    (size,) = _LENGTH.unpack(await stdin.readexactly(_LENGTH.size))
    job = msgspec.msgpack.decode(await stdin.readexactly(size), type=Job)
    serving = asyncio.ensure_future(_serve(job, out))
    orphaned = asyncio.ensure_future(stdin.read())  # EOF: the parent closed our stdin, or is gone
    try:
        await asyncio.wait({serving, orphaned}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (serving, orphaned):
            task.cancel()
        await asyncio.wait({serving, orphaned})
    if serving.cancelled():  # the parent is done with us: what is still buffered is not wanted
        transport.abort()
        return 0
    if (error := serving.exception()) is not None:
        raise error
    # Everything written reaches the parent before the exit: `drain()` only waits above the high-water
    # mark, and a closing loop would drop what is still buffered (the last chunk, or the failure).
    out.close()
    with contextlib.suppress(TimeoutError, OSError):
        await asyncio.wait_for(out.wait_closed(), _GRACE)
    return 0


def main() -> None:
    """The child's entry point."""
    try:
        sys.exit(asyncio.run(_child()))
    except (BrokenPipeError, ConnectionResetError):
        sys.exit(0)  # the parent stopped reading: nothing left to do
