"""The one settings object: decoded once in `main` from an optional TOML file and `SWARM_*` variables.

A variable names its place with double underscores: `SWARM_BUS__URL` sets `bus.url`,
`SWARM_DATA_DIR` sets `data_dir`. Unknown keys, in the file or the environment, are errors.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from bus import ServerSettings
from bus import Settings as BusSettings
from executors.settings import Settings as ExecutorSettings
from gateway.settings import Settings as GatewaySettings
from projectors.settings import Settings as ProjectorSettings
from swarm.client import ClientSettings

ENV_PREFIX = "SWARM_"
CONFIG_VARIABLE = "SWARM_CONFIG"
OPENAI_URL = "https://api.openai.com/v1"


class SettingsError(Exception):
    """The settings could not be read; the message says which key or file and why."""


class LogSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a terminal, JSON otherwise


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = ""  # empty: $XDG_DATA_HOME/codex-swarm or ~/.local/share/codex-swarm
    bus: BusSettings = BusSettings()
    server: ServerSettings = ServerSettings(port=4222)
    projector: ProjectorSettings = ProjectorSettings()
    executor: ExecutorSettings = ExecutorSettings()
    gateway: GatewaySettings = GatewaySettings()
    log: LogSettings = LogSettings()
    client: ClientSettings = ClientSettings()


def load(env: Mapping[str, str], file: Path | None = None) -> Settings:
    """Read the file (the argument, else `$SWARM_CONFIG`, else none), then apply `SWARM_*` variables."""
    path = file or (Path(env[CONFIG_VARIABLE]) if env.get(CONFIG_VARIABLE) else None)
    raw = _read_toml(path) if path else {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and name != CONFIG_VARIABLE:
            _place(raw, name, value)
    _model_from_openai_variables(raw, env)
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        origin = f"{path} and SWARM_* variables" if path else "SWARM_* variables"
        raise SettingsError(f"invalid setting ({origin}): {exc}") from None
    return _with_data_dir(settings, env)


def _model_from_openai_variables(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """`OPENAI_API_KEY` and `OPENAI_BASE_URL`, as the OpenAI tools read them, name the executor's model
    unless the settings name one."""
    upstream = raw.setdefault("executor", {}).setdefault("upstream", {})
    if not isinstance(upstream, dict) or upstream.get("base_url"):
        return
    if env.get("OPENAI_BASE_URL"):
        upstream["base_url"] = env["OPENAI_BASE_URL"]
    if env.get("OPENAI_API_KEY") and not upstream.get("api_key"):
        upstream["api_key"] = env["OPENAI_API_KEY"]
        upstream.setdefault("base_url", OPENAI_URL)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"settings file {path} cannot be read: {exc}") from None


def _place(raw: dict[str, Any], name: str, value: str) -> None:
    *sections, key = name[len(ENV_PREFIX) :].lower().split("__")
    node = raw
    for section in sections:
        child = node.setdefault(section, {})
        if not isinstance(child, dict):
            raise SettingsError(f"{name}: `{section}` is a value, not a section")
        node = child
    node[key] = value


def _with_data_dir(settings: Settings, env: Mapping[str, str]) -> Settings:
    """Fill in the paths left empty: the data directory, and the projector's database inside it."""
    if not settings.data_dir:
        base = Path(env["XDG_DATA_HOME"]) if env.get("XDG_DATA_HOME") else Path.home() / ".local" / "share"
        settings = msgspec.structs.replace(settings, data_dir=str(base / "codex-swarm"))
    return with_data_dir(settings, settings.data_dir)


def with_data_dir(settings: Settings, data_dir: str) -> Settings:
    """The settings moved to another data directory (paths derived from it follow unless set)."""
    projector, executor = settings.projector, settings.executor
    if _derived(projector.database, settings.data_dir):
        database = str(Path(data_dir) / "projector" / "swarm.duckdb")
        projector = msgspec.structs.replace(projector, database=database)
    if _derived(executor.work_dir, settings.data_dir):
        executor = msgspec.structs.replace(executor, work_dir=str(Path(data_dir) / "executor"))
    return msgspec.structs.replace(settings, data_dir=data_dir, projector=projector, executor=executor)


def _derived(path: str, data_dir: str) -> bool:
    """Whether a path is unset or lies in the data directory (so it moves with it)."""
    return not path or path.startswith(data_dir)


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret replaced, for display."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    for key in ("password", "token"):
        if data["bus"].get(key):
            data["bus"][key] = "***"
    if data["gateway"].get("ticket_secret"):
        data["gateway"]["ticket_secret"] = "***"  # noqa: S105  # the mask shown instead of the secret
    if data["client"].get("key"):
        data["client"]["key"] = "***"
    if data["executor"]["upstream"].get("api_key"):
        data["executor"]["upstream"]["api_key"] = "***"
    return data
