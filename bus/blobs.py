"""Large bodies in the JetStream Object Store, named by their SHA-256: put once, get by digest."""

from __future__ import annotations

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from bus.errors import BlobError
from bus.settings import Settings
from schemas import BlobRef, Body
from schemas.chain import digest

log = structlog.get_logger(__name__)


class Blobs:
    """Content-addressed storage; a body of at most `inline_limit` bytes stays inside its event."""

    def __init__(self, js: JetStreamContext, settings: Settings) -> None:
        self._js = js
        self._bucket_name = settings.blob_bucket
        self._inline_limit = settings.inline_limit
        self._bucket: ObjectStore | None = None

    async def _store(self) -> ObjectStore:
        if self._bucket is None:
            self._bucket = await self._js.object_store(self._bucket_name)
        return self._bucket

    async def put(self, data: bytes, media_type: str = "application/octet-stream") -> BlobRef:
        """Store `data` unless a body with the same digest is already there."""
        sha = digest(data)
        store = await self._store()
        try:
            await store.get_info(sha)
        except NotFoundError:
            await store.put(sha, data)
            log.debug("blob_stored", sha256=sha, size=len(data))
        return BlobRef(sha256=sha, size=len(data), media_type=media_type)

    async def get(self, sha256: str) -> bytes:
        """The body with this digest; `BlobError` if it is missing or does not match its name."""
        store = await self._store()
        try:
            result = await store.get(sha256)
        except NotFoundError:
            raise BlobError(sha256, "not found") from None
        data = result.data or b""
        if digest(data) != sha256:
            raise BlobError(sha256, "stored bytes do not match their digest")
        return data

    async def body(self, text: str, media_type: str = "text/plain; charset=utf-8") -> Body:
        """Inline when small; otherwise a preview of `inline_limit` bytes and a reference to the whole."""
        raw = text.encode()
        if len(raw) <= self._inline_limit:
            return Body(text=text)
        preview = raw[: self._inline_limit].decode(errors="ignore")
        return Body(text=preview, ref=await self.put(raw, media_type))
