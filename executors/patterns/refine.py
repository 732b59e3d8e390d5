"""Asking a model to refine the baseline pattern, with structured output whose schema is the msgspec type.

The model gets the (already scrubbed) baseline and the task type's variable hints and answers with a
`Refined` object through the Responses API's `json_schema` format. An answer that is not valid JSON of
that shape, empty, or an API error gives back the baseline, marked `fallback` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import openai
import structlog

from executors.patterns import redact
from schemas.pattern import Content, Refinement, Step, Variable
from schemas.task_types import TaskTypeSpec

log = structlog.get_logger(__name__)

SCHEMA_NAME = "pattern_refinement"
_INSTRUCTIONS = (
    "You turn the record of a successful coding-agent run into a reusable workflow for similar tasks. "
    "Answer with JSON only, in the given schema. Keep the order of the work; at most 12 concise steps, "
    "each saying what to do and why (`target` is the command line or file, or empty). Variables are what "
    "would change for a similar task: paths, file types, names, URLs. Never include secrets, tokens or "
    "absolute paths. Keep the name under 10 words and the summary to one or two sentences."
)
_DROPPED = ("maxLength", "minLength", "maxItems", "minItems", "pattern", "default", "title", "description")


class Refined(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the model answers: the parts of a pattern it may improve (the goal is the run's own)."""

    name: str
    summary: str
    steps: list[Step]
    variables: list[Variable]


@dataclass(frozen=True, slots=True)
class Outcome:
    content: Content
    refinement: Refinement
    detail: str = ""


def schema() -> dict[str, Any]:
    """`Refined`'s JSON Schema as strict structured output wants it: closed objects, every field required."""
    raw = msgspec.json.schema(Refined)
    definitions = raw.get("$defs", {})
    root = definitions.pop("Refined")
    strict: dict[str, Any] = _strict({**root, "$defs": definitions} if definitions else root)
    return strict


class Refiner:
    """One `AsyncOpenAI` client for the extractor's lifetime (opened and closed by `open`/`close`)."""

    def __init__(self, base_url: str, api_key: str, model: str, timeout: float) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "unused", timeout=timeout, max_retries=1
        )
        self._model = model
        self._schema = schema()

    async def close(self) -> None:
        await self._client.close()

    async def refine(self, draft: Content, task: TaskTypeSpec, run_id: str) -> Outcome:
        """The model's version of `draft`, or `draft` itself marked `fallback` with why."""
        try:
            answer = await self._ask(draft, task, run_id)
        except openai.OpenAIError as exc:
            log.warning("pattern_refinement_failed", run_id=run_id, problem=type(exc).__name__)
            return Outcome(draft, "fallback", f"the model call failed: {type(exc).__name__}")
        if not answer.strip():
            return Outcome(draft, "fallback", "the model answered with nothing")
        try:
            refined = msgspec.json.decode(answer, type=Refined)
            content = msgspec.convert(
                {**msgspec.to_builtins(refined), "goal": draft.goal}, type=Content, from_attributes=False
            )
        except msgspec.MsgspecError as exc:
            log.warning("pattern_refinement_invalid", run_id=run_id, problem=str(exc)[:200])
            return Outcome(draft, "fallback", f"the model's answer was not a valid pattern: {str(exc)[:300]}")
        return Outcome(redact.struct(content), "model")

    async def _ask(self, draft: Content, task: TaskTypeSpec, run_id: str) -> str:
        record = {"task_type": task.name, "variable_hints": task.variable_hints, "baseline": draft}
        response = await self._client.responses.create(
            model=self._model,
            instructions=_INSTRUCTIONS,
            input=[{"role": "user", "content": msgspec.json.encode(record).decode()}],
            text={
                "format": {"type": "json_schema", "name": SCHEMA_NAME, "schema": self._schema, "strict": True}
            },
            store=False,
            extra_headers={"x-swarm-run": run_id},
        )
        if response.status not in (None, "completed"):
            return ""
        return response.output_text


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    cleaned = {
        key: {name: _strict(sub) for name, sub in value.items()}
        if key in ("properties", "$defs")
        else _strict(value)
        for key, value in node.items()
        if key not in _DROPPED
    }
    if cleaned.get("type") == "object" and "properties" in cleaned:
        cleaned["required"] = list(cleaned["properties"])
        cleaned["additionalProperties"] = False
    return cleaned
