"""Blobs: content-addressed bodies in the object store, and inline-or-referenced text bodies."""

from __future__ import annotations

import os

import pytest

import bus
from schemas.chain import digest


async def blob_stream_messages(conn: bus.Connection) -> int:
    info = await conn.js.stream_info(f"OBJ_{conn.settings.blob_bucket}")
    return info.state.messages


async def test_put_then_get_returns_the_same_bytes(conn: bus.Connection) -> None:
    """A stored body comes back byte for byte, named by its SHA-256."""
    data = os.urandom(300_000)  # several object-store chunks

    ref = await conn.blobs.put(data, "application/x-tar")

    assert (ref.sha256, ref.size, ref.media_type) == (digest(data), len(data), "application/x-tar")
    assert await conn.blobs.get(ref.sha256) == data


async def test_the_same_content_is_stored_once(conn: bus.Connection) -> None:
    """Putting the same bytes twice gives the same reference and stores nothing the second time."""
    data = b"a diff that several runs produced\n" * 100
    first = await conn.blobs.put(data)
    stored = await blob_stream_messages(conn)

    second = await conn.blobs.put(data)

    assert second == first
    assert await blob_stream_messages(conn) == stored


async def test_an_empty_body_round_trips(conn: bus.Connection) -> None:
    """Zero bytes are a body too."""
    ref = await conn.blobs.put(b"")

    assert ref.size == 0
    assert await conn.blobs.get(ref.sha256) == b""


async def test_getting_an_unknown_digest_is_a_blob_error(conn: bus.Connection) -> None:
    """A digest nothing was stored under raises `BlobError` saying it is not found."""
    missing = digest(b"never stored")

    with pytest.raises(bus.BlobError) as error:
        await conn.blobs.get(missing)

    assert (error.value.digest, error.value.detail) == (missing, "not found")


async def test_bytes_that_do_not_match_their_name_are_refused(conn: bus.Connection) -> None:
    """A body stored under the wrong name (corrupt or forged) is refused rather than returned."""
    name = digest(b"the real body")
    store = await conn.js.object_store(conn.settings.blob_bucket)
    await store.put(name, b"a forged body")

    with pytest.raises(bus.BlobError) as error:
        await conn.blobs.get(name)

    assert error.value.detail == "stored bytes do not match their digest"


async def test_small_text_stays_inline(conn: bus.Connection) -> None:
    """Text up to `inline_limit` bytes is kept in the body itself, with no blob."""
    text = "é" * (conn.settings.inline_limit // 2)
    stored = await blob_stream_messages(conn)

    body = await conn.blobs.body(text)

    assert (body.text, body.ref, body.truncated) == (text, None, False)
    assert await blob_stream_messages(conn) == stored


async def test_large_text_becomes_a_preview_and_a_reference(conn: bus.Connection) -> None:
    """Longer text keeps a preview of at most `inline_limit` bytes inline; the blob holds all of it."""
    limit = conn.settings.inline_limit
    text = "x" + "é" * limit  # multi-byte characters straddle the cut

    body = await conn.blobs.body(text, "text/x-diff")

    assert body.truncated
    assert body.ref is not None
    assert text.startswith(body.text)
    assert limit - 1 <= len(body.text.encode()) <= limit
    assert (body.ref.sha256, body.ref.size, body.ref.media_type) == (
        digest(text.encode()),
        len(text.encode()),
        "text/x-diff",
    )
    assert (await conn.blobs.get(body.ref.sha256)).decode() == text
