"""Creates or updates the `SWARM` stream, the blob bucket and the claims bucket; safe to run from every
process at start."""

from __future__ import annotations

import structlog
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from bus.settings import DAY, Settings
from schemas.subjects import STREAM_SUBJECTS

log = structlog.get_logger(__name__)

_STREAM_NAME_IN_USE = 10058


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=settings.stream,
        description="codex-swarm commands and events",
        subjects=list(STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.replicas,
        max_age=settings.max_age_days * DAY,
        max_bytes=settings.max_bytes,
        max_msg_size=settings.max_message_bytes,
        duplicate_window=settings.duplicate_window_hours * 3_600,
        deny_delete=True,
        deny_purge=True,
        allow_rollup_hdrs=False,
        allow_direct=True,
    )


async def provision(js: JetStreamContext, settings: Settings) -> None:
    """Make the log and the blob bucket exist with the configured settings (idempotent)."""
    await _stream(js, settings.stream, stream_config(settings))
    await _bucket(js, settings)
    await _claims(js, settings)


async def _stream(js: JetStreamContext, name: str, config: StreamConfig) -> None:
    try:
        await js.stream_info(name)
    except NotFoundError:
        try:
            await js.add_stream(config)
        except BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:  # another process created it with other settings
                raise
        else:
            log.info("stream_created", stream=name)
            return
    await js.update_stream(config)


async def _bucket(js: JetStreamContext, settings: Settings) -> None:
    try:
        await js.object_store(settings.blob_bucket)
    except NotFoundError:
        config = ObjectStoreConfig(
            bucket=settings.blob_bucket,
            description="codex-swarm large bodies, named by SHA-256",
            storage=StorageType.FILE,
            replicas=settings.replicas,
        )
        await js.create_object_store(settings.blob_bucket, config=config)
        log.info("bucket_created", bucket=settings.blob_bucket)


async def _claims(js: JetStreamContext, settings: Settings) -> None:
    try:
        await js.key_value(settings.claims_bucket)
    except NotFoundError:
        config = KeyValueConfig(
            bucket=settings.claims_bucket,
            description="codex-swarm names taken once (used WebSocket tickets)",
            ttl=settings.claim_hours * 3_600,
            storage=StorageType.FILE,
            replicas=settings.replicas,
        )
        await js.create_key_value(config)
        log.info("bucket_created", bucket=settings.claims_bucket)
