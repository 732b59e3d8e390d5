"""Settings of the bus and of the embedded server; decoded once by the process's settings loader."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

DAY = 86_400.0
ABANDONED_AFTER = 10.0  # seconds: the server deletes a consumer whose reader vanished (a crash)


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How to reach NATS and how the log is laid out."""

    url: str = "nats://127.0.0.1:4222"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    connect_timeout: Annotated[float, Meta(gt=0)] = 5.0
    stream: Annotated[str, Meta(pattern="^[A-Za-z0-9_-]{1,64}$")] = "SWARM"
    replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    max_age_days: Annotated[float, Meta(ge=0)] = 0.0  # 0 keeps messages forever
    max_bytes: Annotated[int, Meta(ge=-1)] = -1  # -1 has no size limit
    duplicate_window_hours: Annotated[float, Meta(ge=24)] = 24.0
    blob_bucket: Annotated[str, Meta(pattern="^[A-Za-z0-9_-]{1,64}$")] = "SWARM_BLOBS"
    claims_bucket: Annotated[str, Meta(pattern="^[A-Za-z0-9_-]{1,64}$")] = "SWARM_CLAIMS"
    claim_hours: Annotated[float, Meta(gt=0, le=24 * 30)] = 1.0  # how long a taken name stays taken
    inline_limit: Annotated[int, Meta(ge=1_024, le=65_536)] = 65_536
    max_message_bytes: Annotated[int, Meta(ge=1_024, le=1_024 * 1_024)] = 256 * 1_024
    publish_timeout: Annotated[float, Meta(gt=0)] = 5.0
    publish_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    max_in_flight: Annotated[int, Meta(ge=1, le=65_536)] = 1_024


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The embedded nats-server that `swarm up` and the tests start."""

    data_dir: str = ""  # empty: the data directory of the process
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65_535)] = 0  # 0 picks a free port
    binary: str | None = None  # default: nats-server on PATH or next to the Python interpreter
    start_timeout: Annotated[float, Meta(gt=0)] = 20.0
    max_file_store: str = ""  # e.g. "10G"; empty leaves it to the server
