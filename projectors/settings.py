"""Settings of a projector replica; decoded once by the process's settings loader."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

# Messages applied in one transaction at most. Only catch-up fills a batch (a live projector applies what
# has arrived); larger batches rewrite each run they touch less often (docs/performance.md, "Projection").
MAX_BATCH = 40_000


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    database: str = ""  # empty: <data_dir>/projector/swarm.duckdb
    max_batch: Annotated[int, Meta(ge=1, le=100_000)] = MAX_BATCH
    pattern_min_runs: Annotated[int, Meta(ge=1)] = 5  # runs using a pattern before it may be flagged
    rebuild_workers: Annotated[int, Meta(ge=1, le=32)] = 2  # processes folding a rebuild's runs at once
