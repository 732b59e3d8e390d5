"""Stateless command handlers: the Codex run executor (sandboxes, model proxy, Codex JSONL translation)
and the project registry. `swarm executor` runs both (`executors.role`)."""

from executors.executor import Executor
from executors.registry import Registry
from executors.run_log import ExecutorError, Fenced
from executors.runner import Run, Services
from executors.settings import CODEX_VERSION, RUNNER_IMAGE, Settings
from executors.translate import Translator
from executors.workspace import WorkspaceError

__all__ = [
    "CODEX_VERSION",
    "RUNNER_IMAGE",
    "Executor",
    "ExecutorError",
    "Fenced",
    "Registry",
    "Run",
    "Services",
    "Settings",
    "Translator",
    "WorkspaceError",
]
