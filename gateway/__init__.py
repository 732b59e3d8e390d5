"""aiohttp: auth, REST commands and queries, the WebSocket relay, console page, OpenAPI, metrics."""

from gateway.app import create_app
from gateway.keys_cache import KeyCache, new_secret, parse_token
from gateway.role import run
from gateway.settings import Settings

__all__ = ["KeyCache", "Settings", "create_app", "new_secret", "parse_token", "run"]
