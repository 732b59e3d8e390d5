"""Patterns as the text a run's prompt carries: one `<reference_workflow>` block per pattern.

`render` is also the preview the gateway and the CLI show for a pattern (pure, no I/O); it lives in
`schemas` so the executors, the gateway and the CLI share it.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.pattern import Content, Step

GUIDANCE = (
    "This workflow worked for an earlier, similar task. Use it as a guide: adapt each step to this task "
    "(replace the variables with this task's values, skip what does not apply, add what is missing) "
    "rather than copying it."
)


def render(content: Content, *, pattern_id: str = "", version: int = 0) -> str:
    """One pattern (one version of it) as a `<reference_workflow>` block."""
    attributes = f' id="{pattern_id}" version="{version}"' if pattern_id else ""
    lines = [f"<reference_workflow{attributes}>", f"Summary: {content.summary}", "", "Steps:"]
    lines += [f"{number}. {_step(step)}" for number, step in enumerate(content.steps, 1)]
    if content.variables:
        lines += ["", "Variables (values from the earlier task; change them for this one):"]
        lines += [
            f"- {v.name} ({v.kind}): {v.example}" + (f" — {v.description}" if v.description else "")
            for v in content.variables
        ]
    return "\n".join([*lines, "", GUIDANCE, "</reference_workflow>"])


def render_all(chosen: Sequence[tuple[str, int, Content]]) -> str:
    """The blocks of every chosen `(pattern_id, version, content)`, in order."""
    return "\n\n".join(render(content, pattern_id=pid, version=version) for pid, version, content in chosen)


def _step(step: Step) -> str:
    return f"{step.text}: `{step.target}`" if step.target else step.text
