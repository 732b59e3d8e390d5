"""Settings of a projector replica; decoded once by the process's settings loader."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    database: str = ""  # empty: <data_dir>/projector/swarm.duckdb
    max_batch: Annotated[int, Meta(ge=1, le=100_000)] = 10_000  # only catch-up fills a batch
    pattern_min_runs: Annotated[int, Meta(ge=1)] = 5  # runs using a pattern before it may be flagged
    rebuild_workers: Annotated[int, Meta(ge=1, le=32)] = 2  # processes folding a rebuild's runs at once
