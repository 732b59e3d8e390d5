"""Issuing commands: the caller's `Idempotency-Key` as the message id, and `?wait=` for the outcome.

A key is scoped to the tenant (`<tenant>:<key>`), so two tenants can never collide. The log stores a
repeated key once and acknowledges it as a duplicate with the original sequence; the gateway reads that
original message and answers with the first request's resource.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

import bus
from gateway.problems import Problem
from schemas import AnyCommand, AnyEvent, InvalidMessage, decode_command, decode_event, subjects

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")


class Submitted(msgspec.Struct, frozen=True, kw_only=True):
    command: AnyCommand  # the first command sent with this key (this one, unless a duplicate)
    seq: int
    duplicate: bool


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    seq: int
    event: msgspec.Raw


class Accepted(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a command request answers: the resource, the command and its log position."""

    id: str
    command_id: str
    seq: int
    status: str  # accepted (still to happen) or done (the outcome is in `outcome`)
    duplicate: bool  # True: an earlier request with this Idempotency-Key was answered with this
    outcome: Outcome | None = None
    data: Any = None


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise Problem("invalid-request", "Idempotency-Key must be 1-128 printable ASCII characters")
    return key


async def submit(conn: bus.Connection, command: AnyCommand, key: str | None) -> Submitted:
    """Send `command`; with a key seen before, the first command sent with it instead."""
    msg_id = f"{command.tenant}:{key}" if key else None
    ack = await conn.log.send(command, idempotency_key=msg_id)
    if not ack.duplicate:
        return Submitted(command=command, seq=ack.seq, duplicate=False)
    first = await _original(conn, ack.seq)
    if first is None or type(first) is not type(command) or first.tenant != command.tenant:
        raise Problem("idempotency-key-reused", "this Idempotency-Key was used for a different request")
    return Submitted(command=first, seq=ack.seq, duplicate=True)


async def _original(conn: bus.Connection, seq: int) -> AnyCommand | None:
    record = await conn.log.get(seq)
    if record is None:
        return None
    try:
        return decode_command(record.data)
    except InvalidMessage:
        return None


async def outcome(
    conn: bus.Connection, subject: str, after_seq: int, done: Callable[[AnyEvent], bool], within: float
) -> Outcome | None:
    """The first event on `subject` after `after_seq` for which `done` holds, or `None` after `within` s."""
    if within <= 0:
        return None
    try:
        async with asyncio.timeout(within):
            async for record in conn.log.follow(subject, after_seq=after_seq):
                event = decode_event(record.data)
                if done(event):
                    return Outcome(type=event.type, seq=record.seq, event=msgspec.Raw(record.data))
    except TimeoutError:
        return None
    return None


def answer(submitted: Submitted, resource_id: str, location: str, found: Outcome | None) -> web.Response:
    """202 with the resource's Location, or 200 with the outcome when `?wait=` saw it."""
    accepted = Accepted(
        id=resource_id,
        command_id=submitted.command.id,
        seq=submitted.seq,
        status="done" if found else "accepted",
        duplicate=submitted.duplicate,
        outcome=found,
    )
    return web.Response(
        status=200 if found else 202,
        body=msgspec.json.encode(accepted),
        content_type="application/json",
        headers={"Location": location},
    )


async def issue(
    conn: bus.Connection, command: AnyCommand, key: str | None, wait: float, collection: str
) -> web.Response:
    """Publish a command and answer with the outcome it caused (its aggregate's event), if it came in time.

    With a reused idempotency key the first request's command is the one answered for.
    """
    submitted = await submit(conn, command, key)
    first = submitted.command
    found = await outcome(conn, event_subject(first), submitted.seq, caused_by(first), wait)
    return answer(submitted, first.aggregate_id, f"{collection}/{first.aggregate_id}", found)


def event_subject(command: AnyCommand) -> str:
    return subjects.events(command.tenant, command.AGGREGATE, command.aggregate_id)


def caused_by(command: AnyCommand) -> Callable[[AnyEvent], bool]:
    return lambda event: event.causation_id == command.id
