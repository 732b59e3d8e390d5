"""The application's typed keys: what every handler may take from `request.app`."""

from __future__ import annotations

import asyncio

from aiohttp import web

import bus
from gateway.hub import Hubs
from gateway.keys_cache import KeyCache
from gateway.limits import RateLimiter
from gateway.metrics import Metrics
from gateway.pump import Frames
from gateway.settings import Settings
from gateway.tickets import Tickets

CONN = web.AppKey("conn", bus.Connection)
SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", KeyCache)
LIMITER = web.AppKey("limiter", RateLimiter)
METRICS = web.AppKey("metrics", Metrics)
TICKETS = web.AppKey("tickets", Tickets)
HUBS = web.AppKey("hubs", Hubs)  # one log subscription per followed subject, shared by its sockets
FRAMES = web.AppKey("frames", Frames)  # recent event frames, encoded once for all their sockets
STOPPING = web.AppKey("stopping", asyncio.Event)  # set when the replica shuts down: sockets say goodbye
