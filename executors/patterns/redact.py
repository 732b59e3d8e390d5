"""Scrubbing secrets and host paths out of text that goes into a pattern (and to the refining model).

Secrets become `[REDACTED]`; an absolute path inside a run's workspace becomes relative to it; any other
absolute path becomes `<path>`. Applied to the draft before the model sees it and to whatever comes back.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

REDACTED = "[REDACTED]"
HOST_PATH = "<path>"

T = TypeVar("T")

_TOKENS = re.compile(
    r"""
    sk-(?:proj-|live-|test-)?[A-Za-z0-9_\-]{16,}        # OpenAI / Stripe style keys
  | (?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{20,}             # GitHub tokens
  | github_pat_[A-Za-z0-9_]{20,}
  | (?:AKIA|ASIA)[0-9A-Z]{16}                            # AWS access key ids
  | xox[abposr]-[A-Za-z0-9-]{10,}                        # Slack
  | glpat-[A-Za-z0-9_\-]{20,}                            # GitLab
  | AIza[0-9A-Za-z_\-]{35}                               # Google API keys
  | eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+   # JWTs
    """,
    re.VERBOSE,
)
_BEARER = re.compile(r"(?i)\b(bearer|token|basic)(\s+)[A-Za-z0-9._~+/=\-]{8,}")
_ASSIGNED = re.compile(
    r"""(?ix)
    \b([A-Z0-9_\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|auth)
    [A-Z0-9_\-]*)
    (\s*[:=]\s*|\s+)
    ("[^"]*"|'[^']*'|[^\s'"&;,]+)
    """
)
_URL_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@")
_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
)
_ABSOLUTE = re.compile(r"(?<![\w.~:/\-])(?:/[\w.@+%\-]+){2,}/?")
_WORKSPACE = re.compile(r"^.*?/workspace(?:/|$)")


def text(value: str) -> str:
    """`value` without secrets or host paths."""
    value = _PRIVATE_KEY.sub(REDACTED, value)
    value = _URL_CREDENTIALS.sub(rf"\1{REDACTED}@", value)
    value = _TOKENS.sub(REDACTED, value)
    value = _BEARER.sub(rf"\1\2{REDACTED}", value)
    value = _ASSIGNED.sub(_assignment, value)
    return _ABSOLUTE.sub(_path, value)


def struct(value: T) -> T:
    """A copy of a Struct with every string in it scrubbed."""
    scrubbed = _walk(msgspec.to_builtins(value))
    return msgspec.convert(scrubbed, type=type(value))


def path(value: str) -> str:
    """A file path as a pattern shows it: relative to the workspace, never a host path."""
    return text(value) if value.startswith("/") else value


def _walk(value: Any) -> Any:
    match value:
        case str():
            return text(value)
        case list():
            return [_walk(item) for item in value]
        case dict():
            return {key: _walk(item) for key, item in value.items()}
        case _:
            return value


def _assignment(found: re.Match[str]) -> str:
    if found.group(3) == REDACTED or (found.group(2).isspace() and not _looks_secret(found.group(3))):
        return found.group(0)  # `token budget`: a word after a word is not an assignment
    return f"{found.group(1)}{found.group(2)}{REDACTED}"


def _looks_secret(word: str) -> bool:
    return len(word) >= 12 and any(c.isdigit() for c in word) and any(c.isalpha() for c in word)


def _path(found: re.Match[str]) -> str:
    whole = found.group(0)
    inside = _WORKSPACE.sub("", whole, count=1)
    if inside != whole:
        return inside or "."
    return HOST_PATH
