"""The errors of the message vocabulary and its rules.

SchemaError
├── InvalidMessage           bytes that are not a valid message (bad JSON, type, id, size)
│   └── UnknownMessageType   a type tag this reader does not know (written by a newer version)
└── Rejected                 the rules refuse a command (e.g. the run already finished)
    └── IllegalTransition    an event that cannot follow the aggregate's current state
"""

from __future__ import annotations


class SchemaError(Exception):
    """Root of every error raised by `schemas`."""


class InvalidMessage(SchemaError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnknownMessageType(InvalidMessage):
    def __init__(self, tag: str) -> None:
        super().__init__(f"unknown message type {tag!r}")
        self.tag = tag


class Rejected(SchemaError):
    def __init__(self, aggregate: str, aggregate_id: str, reason: str) -> None:
        super().__init__(f"{aggregate} {aggregate_id}: {reason}")
        self.aggregate = aggregate
        self.aggregate_id = aggregate_id
        self.reason = reason


class IllegalTransition(Rejected):
    def __init__(self, aggregate: str, aggregate_id: str, status: str, message_type: str) -> None:
        super().__init__(aggregate, aggregate_id, f"{message_type!r} is not allowed when {status}")
        self.status = status
        self.message_type = message_type
