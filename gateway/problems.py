"""Errors as `application/problem+json` (RFC 9457): a stable `type`, a title, a human `detail`.

Every failure a client can see is a `Problem`; the middleware in `gateway.app` turns it (and aiohttp's
own HTTP errors) into a response, and turns anything else into `internal` without a word of internals.
The `type` is `/problems/<slug>`; the slugs below are the contract, listed in README.md.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from aiohttp import web

MEDIA_TYPE = "application/problem+json"

CATALOG: dict[str, tuple[int, str]] = {
    "invalid-request": (400, "The request is not valid"),
    "unauthorized": (401, "Authentication required"),
    "forbidden": (403, "Not allowed for this key"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "idempotency-key-reused": (409, "Idempotency-Key already used for another request"),
    "conflict": (409, "The resource is not in a state that allows this"),
    "payload-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "query-failed": (422, "The query could not be answered"),
    "rate-limited": (429, "Too many requests"),
    "internal": (500, "Internal error"),
    "bad-gateway": (502, "A backing service failed"),
    "unavailable": (503, "Temporarily unavailable"),
    "not-caught-up": (503, "The read models have not caught up yet"),
}


class Body(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None


class Problem(Exception):
    """One failure a client may see; `slug` names it in `CATALOG`."""

    def __init__(self, slug: str, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.slug = slug
        self.status, self.title = CATALOG[slug]
        self.detail = detail
        self.headers = dict(headers or {})

    def response(self, instance: str | None = None, request_id: str | None = None) -> web.Response:
        body = Body(
            type=f"/problems/{self.slug}",
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            request_id=request_id,
        )
        return web.Response(
            status=self.status, body=msgspec.json.encode(body), content_type=MEDIA_TYPE, headers=self.headers
        )


_HTTP_SLUGS = {
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def from_http(error: web.HTTPException) -> Problem:
    """aiohttp's own errors (no route, wrong method, body over the limit) in the same shape."""
    slug = _HTTP_SLUGS.get(error.status, "invalid-request" if error.status < 500 else "internal")
    detail = {
        "not-found": "no such resource",
        "method-not-allowed": "this resource does not accept that method",
        "payload-too-large": "the request body is over the size limit",
    }.get(slug, error.reason)
    headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
    return Problem(slug, detail, headers=headers)
