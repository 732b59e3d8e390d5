"""What the deciders need besides state and command: the clock, the id source, who is acting."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict

from schemas.base import CommandBase
from schemas.ids import IdSource, Kind


class Envelope(TypedDict):
    id: str
    at: datetime
    tenant: str
    actor: str
    causation_id: str


@dataclass(frozen=True, slots=True)
class Context:
    """The outside world as the pure rules see it; tests pass a fixed clock and seeded ids.

    `actor` is who appends the events (an executor); `None` means the command's own actor.
    """

    now: datetime
    actor: str | None = None
    ids: IdSource = field(default_factory=IdSource)

    def envelope(self, command: CommandBase) -> Envelope:
        """The envelope of an event that answers `command`."""
        return Envelope(
            id=self.ids.new(Kind.EVENT),
            at=self.now,
            tenant=command.tenant,
            actor=self.actor or command.actor,
            causation_id=command.id,
        )
