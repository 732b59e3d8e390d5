"""What the log and its consumers look like right now: sizes, lag, work in flight, live services."""

from __future__ import annotations

import asyncio
import json

import msgspec
from nats.js.errors import NotFoundError

from bus.connection import Connection
from bus.errors import ServerError


class ConsumerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A durable consumer (a work queue): `pending` is its lag, `ack_pending` the work in flight."""

    name: str
    subject: str
    pending: int
    ack_pending: int
    redelivered: int
    waiting: int  # pull requests waiting: replicas asking for work


class StreamStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: list[ConsumerStatus]


class ServiceInstance(msgspec.Struct, frozen=True, kw_only=True):
    """One replica of a request/reply service, as it answered `$SRV.PING`."""

    name: str
    id: str
    version: str


async def stream_status(conn: Connection) -> StreamStatus:
    """The log's size and every durable consumer on it."""
    name = conn.settings.stream
    try:
        info = await conn.js.stream_info(name)
    except NotFoundError:
        raise ServerError(f"the stream {name} does not exist (has `swarm up` or provisioning run?)") from None
    consumers = [
        ConsumerStatus(
            name=consumer.name,
            subject=consumer.config.filter_subject or "",
            pending=consumer.num_pending or 0,
            ack_pending=consumer.num_ack_pending or 0,
            redelivered=consumer.num_redelivered or 0,
            waiting=consumer.num_waiting or 0,
        )
        for consumer in await conn.js.consumers_info(name)
        if consumer.config.durable_name
    ]
    state = info.state
    return StreamStatus(
        name=name,
        messages=state.messages,
        bytes=state.bytes,
        first_seq=state.first_seq,
        last_seq=state.last_seq,
        consumers=sorted(consumers, key=lambda consumer: consumer.name),
    )


async def services(conn: Connection, within: float = 0.5) -> list[ServiceInstance]:
    """Every replica of every service that answers a ping within `within` seconds."""
    found: list[ServiceInstance] = []
    inbox = conn.nc.new_inbox()
    subscription = await conn.nc.subscribe(inbox)
    try:
        await conn.nc.publish("$SRV.PING", b"", reply=inbox)
        async with asyncio.timeout(within):
            async for message in subscription.messages:
                if instance := _instance(message.data):  # a "no responders" status has no body
                    found.append(instance)  # noqa: PERF401  # a timeout ends the loop
    except TimeoutError:
        pass
    finally:
        await subscription.unsubscribe()
    return sorted(found, key=lambda instance: (instance.name, instance.id))


def _instance(data: bytes) -> ServiceInstance | None:
    try:
        ping = json.loads(data)
    except ValueError:
        return None
    return ServiceInstance(
        name=str(ping.get("name")), id=str(ping.get("id")), version=str(ping.get("version"))
    )
