"""Settings of a gateway replica; decoded once by the process's settings loader."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the gateway listens and the limits it enforces."""

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65_535)] = 8080  # 0 picks a free port
    public_url: str = ""  # the base URL clients see (behind a proxy); empty: derived from the request
    cors_origins: tuple[str, ...] = ()  # exact origins allowed to call from a browser
    max_body_bytes: Annotated[int, Meta(ge=1_024, le=16 * 1_024 * 1_024)] = 256 * 1_024
    rate_per_second: Annotated[float, Meta(gt=0)] = 20.0  # per key, refilled continuously
    rate_burst: Annotated[int, Meta(ge=1)] = 60
    ticket_ttl: Annotated[float, Meta(gt=0, le=300)] = 30.0
    ticket_secret: str = ""  # shared by replicas so any of them accepts a ticket; empty: per replica
    query_wait_ms: Annotated[int, Meta(ge=0, le=30_000)] = 5_000
    max_wait_seconds: Annotated[float, Meta(ge=0, le=300)] = 60.0  # most a `?wait=` may ask
    ws_queue: Annotated[int, Meta(ge=1, le=100_000)] = 1_000  # frames queued per socket before it is cut
    ws_position_every: Annotated[float, Meta(gt=0)] = 15.0  # seconds between position frames
    ws_auth_timeout: Annotated[float, Meta(gt=0)] = 5.0
    shutdown_grace: Annotated[float, Meta(ge=0)] = 5.0
