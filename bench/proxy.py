"""Model proxy latency: the same streamed answer fetched directly and through the proxy, interleaved.

The scripted model runs in a child process and plays one Codex-like turn (reasoning, a shell command
and a message: 152 SSE events, 33 KB) for every request, to a Codex-sized request (~40 KB of input).
Each round fetches it three ways, in rotating order: directly from the upstream, through the proxy's
unix socket and through its loopback TCP listener. The proxy runs in this process with the client (a
raw aiohttp session per path, connections kept alive). For each round the difference to the direct
fetch of the same round is taken, for the time to the first body byte and to the last; the medians
and 95th percentiles of those differences are the proxy's added latency.

    .venv/bin/python bench/proxy.py [--rounds 300] [--warm-up 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import aiohttp
import structlog

from executors.proxy import Grant, ModelCall, ModelProxy, Report, Upstream

WORDS = "the parser drops the last token when a line ends without a newline so I will fix the loop "
TURN = {
    "kind": "respond",
    "items": [
        {"kind": "reasoning", "summary": "**Planning** " + WORDS * 2},
        {"kind": "exec_command", "cmd": "python -m pytest -x tests/test_parser.py && git diff --stat"},
        {"kind": "message", "text": (WORDS * 5).strip()},
    ],
    "usage": {"input_tokens": 9000, "cached_tokens": 8000, "output_tokens": 400, "reasoning_tokens": 120},
}
TURN_OUTPUT_TOKENS = 400
REQUEST = json.dumps(
    {
        "model": "gpt-5.5",
        "stream": True,
        "input": [{"type": "message", "role": "developer", "content": WORDS * 450}],
    }
).encode()
PATHS = ("direct", "unix", "tcp")


@dataclass(frozen=True, slots=True)
class Timing:
    first_byte_ms: float
    last_byte_ms: float


Fetch: TypeAlias = Callable[[], Awaitable[Timing]]


async def fetch(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Timing:
    """POST the request and read the stream to its end, timing the first and the last body byte."""
    start = time.perf_counter()
    async with session.post(url, data=REQUEST, headers=headers) as answer:
        answer.raise_for_status()
        first = await answer.content.readany()
        first_at = time.perf_counter()
        size = len(first)
        while chunk := await answer.content.readany():
            size += len(chunk)
        done_at = time.perf_counter()
    if size < 10_000:
        raise SystemExit(f"{url}: a {size}-byte answer; is the script used up?")
    return Timing((first_at - start) * 1000, (done_at - start) * 1000)


@contextlib.asynccontextmanager
async def upstream_process(rounds: int, directory: Path) -> AsyncIterator[str]:
    """The scripted model in a child process, with enough identical turns for every request of a path."""
    (directory / "bench.json").write_text(json.dumps({"turns": [TURN] * rounds}))
    output = directory / "upstream.log"
    with output.open("w") as sink:
        child = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "executors.scripted", "--scripts-dir", str(directory)),
            *("--default-script", "bench"),
            stdout=sink,
            stderr=sink,
        )
    try:
        yield await _announced_url(output)
    finally:
        child.terminate()
        await child.wait()


async def _announced_url(output: Path) -> str:
    """The base URL from the child's "scripted model at http://...:PORT/v1" line."""
    async with asyncio.timeout(20):
        # The child offers nothing to wait on but its output file.
        while not (found := re.search(r"scripted model at (\S+)", output.read_text())):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return found.group(1)


class Tally:
    """The runs' `on_report`: counts the calls recorded with the scripted usage (the executor would
    publish them), so a proxy that silently lost records could not flatter itself."""

    def __init__(self) -> None:
        self.recorded = 0

    async def __call__(self, report: Report) -> None:
        if isinstance(report, ModelCall) and report.usage.output_tokens == TURN_OUTPUT_TOKENS:
            self.recorded += 1


@contextlib.asynccontextmanager
async def clients(proxy: ModelProxy, base_url: str, tally: Tally) -> AsyncIterator[dict[str, Fetch]]:
    """One keep-alive session per path, each a callable fetching the benchmark turn once.

    The two proxied paths belong to two runs, so each run plays the script from its start as the
    direct path does.
    """
    unix = await proxy.open_run("bench-unix", max_tokens=None, on_report=tally)
    tcp = await proxy.open_run("bench-tcp", max_tokens=None, on_report=tally, tcp=True)
    json_body = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as plain,
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(unix.socket))) as over_unix,
    ):
        yield {
            "direct": lambda: fetch(plain, f"{base_url}/responses", {**json_body, "x-swarm-run": "direct"}),
            "unix": lambda: fetch(over_unix, "http://proxy/v1/responses", {**json_body, **bearer(unix)}),
            "tcp": lambda: fetch(plain, f"{tcp.base_url}/responses", {**json_body, **bearer(tcp)}),
        }


def bearer(grant: Grant) -> dict[str, str]:
    return {"Authorization": f"Bearer {grant.token}"}


async def measure(fetchers: dict[str, Fetch], rounds: int) -> list[dict[str, Timing]]:
    """`rounds` rounds of one fetch per path, the order rotating from round to round."""
    results = []
    for i in range(rounds):
        order = PATHS[i % 3 :] + PATHS[: i % 3]
        results.append({path: await fetchers[path]() for path in order})
    return results


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def report(results: list[dict[str, Timing]]) -> None:
    print(f"\n{len(results)} rounds; each row: median / p95 in ms")
    print(f"{'':28} {'first byte':>17} {'last byte':>17}")
    for path in PATHS:
        first, last = _times(results, path, "first"), _times(results, path, "last")
        print(f"{path + ' (absolute)':28} {_pair(first)} {_pair(last)}")
    for path in PATHS[1:]:
        first, last = _added(results, path, "first"), _added(results, path, "last")
        print(f"{path + ' minus direct':28} {_pair(first)} {_pair(last)}")
    for path in PATHS[1:]:
        parts = [_summary(edge, _added(results, path, edge)) for edge in ("first", "last")]
        print(f"added latency via {path}: {'; '.join(parts)}")


def _times(results: list[dict[str, Timing]], path: str, edge: str) -> list[float]:
    return [getattr(r[path], f"{edge}_byte_ms") for r in results]


def _added(results: list[dict[str, Timing]], path: str, edge: str) -> list[float]:
    """Per round: the proxied fetch's time to its first or last byte minus the direct fetch's."""
    ours, direct = _times(results, path, edge), _times(results, "direct", edge)
    return [mine - theirs for mine, theirs in zip(ours, direct, strict=True)]


def _summary(edge: str, diffs: list[float]) -> str:
    return f"{edge} byte median {statistics.median(diffs):.2f} ms, p95 {p95(diffs):.2f} ms"


def _pair(values: list[float]) -> str:
    return f"{statistics.median(values):>8.2f} /{p95(values):>7.2f}"


async def main(args: argparse.Namespace) -> None:
    turns, tally = args.rounds + args.warm_up, Tally()
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        async with (
            upstream_process(turns, Path(tmp)) as base_url,
            ModelProxy(Upstream(base_url, api_key="sk-bench"), Path(tmp) / "sockets") as proxy,
            clients(proxy, base_url, tally) as fetchers,
        ):
            await measure(fetchers, args.warm_up)
            results = await measure(fetchers, args.rounds)
    if tally.recorded != 2 * turns:
        raise SystemExit(f"the proxy recorded {tally.recorded} calls with usage, expected {2 * turns}")
    report(results)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=300, help="measured rounds (one fetch per path each)")
    parser.add_argument("--warm-up", type=int, default=30, help="rounds run first and not counted")
    return parser.parse_args()


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main(parse_args()))
