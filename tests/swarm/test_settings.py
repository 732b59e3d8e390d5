"""Settings: one frozen object from an optional TOML file and SWARM_* variables; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm.settings import SettingsError, load, redacted


def test_defaults_and_data_dir_from_xdg(tmp_path: Path) -> None:
    """With nothing set, the defaults apply and the data lives under $XDG_DATA_HOME."""
    settings = load({"XDG_DATA_HOME": str(tmp_path)})
    assert settings.bus.url == "nats://127.0.0.1:4222"
    assert settings.bus.duplicate_window_hours >= 24
    assert settings.data_dir == str(tmp_path / "codex-swarm")


def test_file_then_environment(tmp_path: Path) -> None:
    """Variables override the file, converting text to the field's type."""
    path = tmp_path / "swarm.toml"
    path.write_text('data_dir = "/srv/swarm"\n[bus]\nurl = "nats://nats:4222"\nmax_in_flight = 64\n')
    settings = load(
        {"SWARM_CONFIG": str(path), "SWARM_BUS__MAX_IN_FLIGHT": "128", "SWARM_LOG__LEVEL": "debug"}
    )
    assert settings.data_dir == "/srv/swarm"
    assert settings.bus.url == "nats://nats:4222"
    assert settings.bus.max_in_flight == 128
    assert settings.log.level == "debug"


@pytest.mark.parametrize(
    ("env", "file_text", "message"),
    [
        ({"SWARM_BUS__URLL": "x"}, None, "unknown field `urll` - at `$.bus`"),
        ({}, "[bus]\nstreem = 'X'\n", "unknown field `streem` - at `$.bus`"),
        ({"SWARM_BUS__MAX_IN_FLIGHT": "many"}, None, "Expected `int`, got `str` - at `$.bus.max_in_flight`"),
        ({"SWARM_BUS__DUPLICATE_WINDOW_HOURS": "1"}, None, "Expected `float` >= 24"),
        ({}, "[bus\n", "cannot be read"),
        ({"SWARM_BUS": "x", "SWARM_BUS__URL": "y"}, None, "is a value, not a section"),
    ],
)
def test_bad_settings_say_what_is_wrong(
    tmp_path: Path, env: dict[str, str], file_text: str | None, message: str
) -> None:
    """Unknown keys, wrong types, out-of-range values and broken files are refused with the reason."""
    if file_text is not None:
        path = tmp_path / "swarm.toml"
        path.write_text(file_text)
        env = env | {"SWARM_CONFIG": str(path)}
    with pytest.raises(SettingsError, match=message.replace("$", r"\$").replace("(", r"\(")):
        load(env)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """A settings file that does not exist is named in the error."""
    with pytest.raises(SettingsError, match="does not exist"):
        load({}, tmp_path / "nope.toml")


def test_redacted_hides_secrets() -> None:
    """Displayed settings never show a password, token or the model API key."""
    env = {"SWARM_BUS__PASSWORD": "hunter2", "SWARM_BUS__TOKEN": "t0k", "HOME": "/root"}
    shown = redacted(load({**env, "SWARM_EXECUTOR__UPSTREAM__API_KEY": "sk-live-123"}))
    assert shown["bus"]["password"] == "***"
    assert shown["bus"]["token"] == "***"
    assert shown["executor"]["upstream"]["api_key"] == "***"
    assert "hunter2" not in str(shown)
    assert "sk-live-123" not in str(shown)


def test_openai_variables_name_the_model_unless_settings_do() -> None:
    """`OPENAI_API_KEY`/`OPENAI_BASE_URL` configure the model; explicit settings win over them."""
    plain = load({"HOME": "/root", "OPENAI_API_KEY": "sk-1"}).executor.upstream
    assert (plain.base_url, plain.api_key) == ("https://api.openai.com/v1", "sk-1")
    local = load({"HOME": "/root", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}).executor.upstream
    assert (local.base_url, local.api_key) == ("http://127.0.0.1:9/v1", "")
    env = {"HOME": "/root", "OPENAI_API_KEY": "sk-1", "SWARM_EXECUTOR__UPSTREAM__BASE_URL": "http://m/v1"}
    explicit = load(env).executor.upstream
    assert (explicit.base_url, explicit.api_key) == ("http://m/v1", "")
    assert load({"HOME": "/root"}).executor.upstream.base_url == ""
