"""structlog, configured once per process: JSON when not on a terminal, key-value events."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from swarm.settings import LogSettings


def configure(settings: LogSettings, file: TextIO | None = None) -> None:
    """Log to `file` (default standard error); JSON unless it is a terminal or the settings say otherwise."""
    output = file or sys.stderr
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    json = settings.format == "json" or (settings.format == "auto" and not output.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=output),
        cache_logger_on_first_use=True,
    )
