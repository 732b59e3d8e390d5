"""The scripted model: an OpenAI-compatible Responses API server that plays scripts of model turns.

Tests and the offline demo point Codex (or the `openai` client) at it instead of a real model.
The script format is described in `executors.scripted.script` and docs/scripted-model.md.
"""

from executors.scripted.script import (
    BUNDLED,
    FINISHED,
    ApplyPatch,
    ExecCommand,
    Fail,
    FunctionCall,
    HttpError,
    Item,
    JsonAnswer,
    Message,
    Reasoning,
    Respond,
    Script,
    ScriptError,
    Turn,
    Usage,
    catalogue,
    load,
    load_dir,
    parse,
)
from executors.scripted.server import (
    RUN_HEADER,
    SCRIPT_HEADER,
    RecordedRequest,
    ScriptedModel,
    conversation_of,
)

__all__ = [
    "BUNDLED",
    "FINISHED",
    "RUN_HEADER",
    "SCRIPT_HEADER",
    "ApplyPatch",
    "ExecCommand",
    "Fail",
    "FunctionCall",
    "HttpError",
    "Item",
    "JsonAnswer",
    "Message",
    "Reasoning",
    "RecordedRequest",
    "Respond",
    "Script",
    "ScriptError",
    "ScriptedModel",
    "Turn",
    "Usage",
    "catalogue",
    "conversation_of",
    "load",
    "load_dir",
    "parse",
]
