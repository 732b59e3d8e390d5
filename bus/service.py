"""Request/reply services: a NATS micro service whose endpoints share a queue group across replicas.

`serve` registers a service for discovery (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`, by name) and answers
each endpoint's requests with its handler; any number of replicas serving the same endpoints in the
same queue group share the load. `request` is the client side. The bus carries bytes: what a request
and its reply mean is the service's business.

A handler that raises gets its request answered with the micro error headers (`Nats-Service-Error-Code`
500), which `request` turns into `RequestFailed(reason="service_error")`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import structlog
from nats import micro
from nats.errors import BadSubjectError, MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.micro.request import Request

from bus.connection import Connection
from bus.errors import PayloadTooLarge, RequestFailed

log = structlog.get_logger(__name__)

Responder = Callable[[str, bytes], Awaitable[bytes]]
"""Answers one request: takes its subject and body, returns the reply body."""

ERROR = "Nats-Service-Error"
ERROR_CODE = "Nats-Service-Error-Code"


class Service:
    """One running replica of a service: its discovery id and the requests each endpoint has taken.

    Each request is answered in its own task, at most `max_in_flight` at once; beyond that the
    endpoint stops taking messages until one finishes (they wait in the subscription's buffer).
    """

    def __init__(self, micro_service: Any, *, max_in_flight: int, max_payload: int) -> None:
        self._micro = micro_service
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_payload = max_payload
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def id(self) -> str:
        return str(self._micro.id)

    def served(self) -> dict[str, int]:
        """Requests taken so far, per endpoint name."""
        return {stats.name: stats.num_requests for stats in self._micro.stats().endpoints}

    async def _take(self, handler: Responder, request: Request) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._answer(handler, request))
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def _answer(self, handler: Responder, request: Request) -> None:
        try:
            reply = await handler(request.subject, request.data)
            if len(reply) > self._max_payload:
                await request.respond_error("413", f"reply of {len(reply)} bytes over the payload limit")
            else:
                await request.respond(reply)
        except asyncio.CancelledError:
            await _quietly(request.respond_error("503", "shutting down"))
            raise
        except Exception:  # the last resort: the caller still gets an answer instead of a timeout
            log.exception("request_failed", subject=request.subject)
            await _quietly(request.respond_error("500", "internal error"))

    async def _stop(self, grace: float) -> None:
        """Stop taking requests; give those in flight `grace` seconds, then cancel them."""
        await self._micro.stop()
        if self._in_flight:
            _, late = await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


@contextlib.asynccontextmanager
async def serve(
    conn: Connection,
    *,
    name: str,
    version: str,
    endpoints: Mapping[str, tuple[str, Responder]],
    queue: str,
    description: str = "",
    max_in_flight: int = 64,
    grace: float = 5.0,
) -> AsyncIterator[Service]:
    """Serve `endpoints` (endpoint name -> (subject, handler)) in queue group `queue` until exit.

    Subjects may hold wildcards; the handler gets the concrete subject. On exit the replica stops taking
    requests and finishes those in flight (see `Service._stop`).
    """
    micro_service = await micro.add_service(
        conn.nc, name=name, version=version, description=description, queue_group=queue
    )
    service = Service(micro_service, max_in_flight=max_in_flight, max_payload=conn.nc.max_payload)
    try:
        for endpoint, (subject, handler) in endpoints.items():
            answer = functools.partial(service._take, handler)
            await micro_service.add_endpoint(name=endpoint, subject=subject, handler=answer)
        await conn.nc.flush()  # the subscriptions are live on the server before anyone asks
        yield service
    finally:
        await service._stop(grace)


async def request(conn: Connection, subject: str, payload: bytes, *, within: float) -> bytes:
    """Send one request and return the reply body.

    Raises `RequestFailed` when nobody serves `subject` (`no_responders`), no reply comes within
    `within` seconds (`timeout`), the service failed to answer (`service_error`) or the subject is not
    valid (`bad_subject`); `PayloadTooLarge` when `payload` is over the server's limit.
    """
    try:
        msg = await conn.nc.request(subject, payload, timeout=within)
    except NoRespondersError as exc:
        raise RequestFailed(subject, "no_responders", "no service answers this subject") from exc
    except NatsTimeout as exc:
        raise RequestFailed(subject, "timeout", f"no reply within {within}s") from exc
    except BadSubjectError as exc:
        raise RequestFailed(subject, "bad_subject", "not a valid NATS subject") from exc
    except MaxPayloadError as exc:
        raise PayloadTooLarge(subject, len(payload), conn.nc.max_payload) from exc
    headers = msg.headers or {}
    if ERROR_CODE in headers:
        raise RequestFailed(subject, "service_error", f"{headers[ERROR_CODE]} {headers.get(ERROR, '')}")
    return bytes(msg.data)


async def _quietly(reply: Awaitable[None]) -> None:
    """A reply lost with the connection leaves the caller to its timeout; never fatal here."""
    try:
        await reply
    except Exception as exc:  # any transport failure: nothing more to tell the caller
        log.warning("reply_failed", error=repr(exc))
