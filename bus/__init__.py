"""Everything that touches NATS: connection, provisioning, the log, work queues, blobs, claims, embedded
server."""

from bus import _cancellation
from bus._pipeline import Ack
from bus.blobs import Blobs
from bus.claims import Claims
from bus.connection import Connection, connect
from bus.consume import Delivery, Queue, Reject, Retry, Worker
from bus.errors import (
    BlobError,
    BusError,
    ConcurrencyConflict,
    PayloadTooLarge,
    PublishFailed,
    RequestFailed,
    ServerBinaryMissing,
    ServerError,
    Unreachable,
)
from bus.log import START, Log, Position
from bus.provision import provision, stream_config
from bus.record import DIGEST, Record
from bus.server import RunningServer, embedded, find_binary
from bus.service import Responder, Service, request, serve
from bus.settings import ServerSettings, Settings

__all__ = [
    "DIGEST",
    "START",
    "Ack",
    "BlobError",
    "Blobs",
    "BusError",
    "Claims",
    "ConcurrencyConflict",
    "Connection",
    "Delivery",
    "Log",
    "PayloadTooLarge",
    "Position",
    "PublishFailed",
    "Queue",
    "Record",
    "Reject",
    "RequestFailed",
    "Responder",
    "Retry",
    "RunningServer",
    "ServerBinaryMissing",
    "ServerError",
    "ServerSettings",
    "Service",
    "Settings",
    "Unreachable",
    "Worker",
    "connect",
    "embedded",
    "find_binary",
    "provision",
    "request",
    "serve",
    "stream_config",
]

_cancellation.install()
