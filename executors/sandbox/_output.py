"""A sandboxed process's output: stdout split into queued lines, and the tail of stderr."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

_CHUNK = 64 * 1024
_FRAME = struct.Struct(">BxxxL")  # Docker's multiplexed stream: stream type, 3 pad bytes, length
_STDOUT = 1


class Lines:
    """Lines of a byte stream, queued as they complete so `lines()` and `wait()` need not run together.

    One consumer. The queue is unbounded: a run's output stays in memory until it is read.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._ended = asyncio.Event()

    async def pump(self, chunks: AsyncIterator[bytes]) -> None:
        """Split `chunks` into lines until the stream ends; a last line without a newline is kept."""
        pending = bytearray()
        try:
            async for chunk in chunks:
                pending += chunk
                if b"\n" in chunk:
                    *complete, rest = pending.split(b"\n")
                    for line in complete:
                        self._queue.put_nowait(bytes(line))
                    pending = bytearray(rest)
        finally:
            if pending:
                self._queue.put_nowait(bytes(pending))
            self._queue.put_nowait(None)
            self._ended.set()

    async def lines(self) -> AsyncIterator[bytes]:
        """Each line without its newline, until the stream has ended."""
        while (line := await self._queue.get()) is not None:
            yield line

    async def ended(self) -> None:
        """Return once the stream has ended (every line is queued)."""
        await self._ended.wait()


class Tail:
    """The last `size` bytes of a stream, decoded for `Exit.stderr`."""

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        self._data = bytearray()

    async def pump(self, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            self._data += chunk
            del self._data[: -self._size]

    def text(self) -> str:
        return self._data.decode(errors="replace")


async def chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The bytes of `reader` as they arrive, until end of file."""
    while chunk := await reader.read(_CHUNK):
        yield chunk


async def stdout_frames(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The stdout payloads of a Docker attach stream (non-TTY), until the stream ends or breaks off."""
    try:
        while True:
            stream, size = _FRAME.unpack(await reader.readexactly(_FRAME.size))
            payload = await reader.readexactly(size)
            if stream == _STDOUT:
                yield payload
    except asyncio.IncompleteReadError:
        return
