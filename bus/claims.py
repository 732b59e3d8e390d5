"""Names that can be taken once across every process, for a while: a JetStream key-value bucket whose
entries expire after `claim_hours`. Taking a name is an atomic create, so two replicas racing for the
same name get one `True` between them."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from bus.settings import Settings


class Claims:
    def __init__(self, js: JetStreamContext, settings: Settings) -> None:
        self._js = js
        self._bucket_name = settings.claims_bucket
        self._bucket: KeyValue | None = None

    async def take(self, name: str) -> bool:
        """True the first time `name` is taken (within the bucket's retention), False every time after.

        `name` is made of letters, digits and `-_=.`; the caller chooses it (a ticket's nonce, say).
        """
        if self._bucket is None:
            self._bucket = await self._js.key_value(self._bucket_name)
        try:
            await self._bucket.create(name, b"")
        except KeyWrongLastSequenceError:
            return False
        return True
