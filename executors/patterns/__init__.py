"""Patterns: reusable workflows extracted from succeeded runs, chosen for and rendered into later runs.

`Extractor` serves the `patterns` work queue (extract, edit, retire, restore); `select.choose` picks a
run's patterns; `render` is the `<reference_workflow>` block (and the preview the gateway/CLI show).
"""

from executors.patterns.extractor import EXTRACTOR_VERSION, Extractor
from executors.patterns.select import Chosen, choose, rank
from schemas.pattern_render import render, render_all

__all__ = ["EXTRACTOR_VERSION", "Chosen", "Extractor", "choose", "rank", "render", "render_all"]
