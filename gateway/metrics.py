"""Prometheus metrics in the text exposition format, without a client library: counters, one gauge,
and histograms with fixed buckets. Labels are bounded (route templates, not paths)."""

from __future__ import annotations

import bisect
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[tuple[str, str], ...]


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value


class Metrics:
    """The gateway's metrics; `render()` is what `/metrics` serves."""

    def __init__(self) -> None:
        self.requests: defaultdict[Labels, int] = defaultdict(int)
        self.latency: defaultdict[Labels, Histogram] = defaultdict(Histogram)
        self.sockets_open = 0
        self.sockets_cut_slow = 0
        self.frames_sent = 0
        self.relay_lag = Histogram()

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(("method", method), ("route", route), ("status", str(status)))] += 1
        self.latency[(("route", route),)].observe(seconds)

    def render(self) -> str:
        lines = [
            "# HELP swarm_gateway_requests_total HTTP requests by method, route and status.",
            "# TYPE swarm_gateway_requests_total counter",
        ]
        lines += [f"swarm_gateway_requests_total{_labels(k)} {v}" for k, v in sorted(self.requests.items())]
        lines += [
            "# HELP swarm_gateway_request_seconds Request latency.",
            "# TYPE swarm_gateway_request_seconds histogram",
        ]
        for labels, histogram in sorted(self.latency.items()):
            lines += _histogram("swarm_gateway_request_seconds", labels, histogram)
        lines += [
            "# HELP swarm_gateway_websockets_open Open WebSocket connections.",
            "# TYPE swarm_gateway_websockets_open gauge",
            f"swarm_gateway_websockets_open {self.sockets_open}",
            "# HELP swarm_gateway_websockets_slow_total Sockets closed because the client fell behind.",
            "# TYPE swarm_gateway_websockets_slow_total counter",
            f"swarm_gateway_websockets_slow_total {self.sockets_cut_slow}",
            "# HELP swarm_gateway_relay_frames_total Event frames sent to WebSocket clients.",
            "# TYPE swarm_gateway_relay_frames_total counter",
            f"swarm_gateway_relay_frames_total {self.frames_sent}",
            "# HELP swarm_gateway_relay_lag_seconds Log storage to an event frame first sent.",
            "# TYPE swarm_gateway_relay_lag_seconds histogram",
            *_histogram("swarm_gateway_relay_lag_seconds", (), self.relay_lag),
        ]
        return "\n".join(lines) + "\n"


def _labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = [*labels, extra] if extra else list(labels)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _histogram(name: str, labels: Labels, histogram: Histogram) -> list[str]:
    lines, running = [], 0
    for bound, count in zip((*histogram.buckets, float("inf")), histogram.counts, strict=True):
        running += count
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        lines.append(f"{name}_bucket{_labels(labels, ('le', le))} {running}")
    lines.append(f"{name}_sum{_labels(labels)} {histogram.total:.6f}")
    lines.append(f"{name}_count{_labels(labels)} {running}")
    return lines
