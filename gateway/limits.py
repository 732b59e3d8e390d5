"""Per-key rate limits (token buckets), the CORS allow-list and the security headers."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from gateway.problems import Problem

_MAX_BUCKETS = 100_000  # the least recently used keys' buckets are forgotten beyond this


class RateLimiter:
    """One token bucket per key: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Spend one token; return 0 when allowed, else the seconds until one is available."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self._rate
        self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait

    def check(self, key: str) -> None:
        wait = self.take(key)
        if wait > 0:
            retry = str(max(1, math.ceil(wait)))
            raise Problem(
                "rate-limited", f"over the rate limit; retry in {retry} s", headers={"Retry-After": retry}
            )


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}
_CORS_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-Id"


def secure(response: web.StreamResponse, api: bool) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if api:
        response.headers.setdefault("Cache-Control", "no-store")


def cors(request: web.Request, response: web.StreamResponse, allowed: tuple[str, ...]) -> None:
    """Echo an allowed `Origin`; say nothing for others (the browser then refuses the response)."""
    origin = request.headers.get("Origin")
    if origin and origin in allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Expose-Headers"] = "Location, Retry-After, X-Request-Id"


def preflight(request: web.Request, allowed: tuple[str, ...]) -> web.Response:
    origin = request.headers.get("Origin")
    if not origin or origin not in allowed:
        raise Problem("forbidden", "this origin is not allowed")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": _CORS_METHODS,
            "Access-Control-Allow-Headers": _CORS_HEADERS,
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
    )
