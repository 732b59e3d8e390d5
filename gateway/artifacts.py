"""A run's artifacts: list and download, the diff, and the files of its final workspace.

Bodies come from the blob store by the SHA-256 the read model lists. Workspace files are read from the
run's `workspace.tar.gz` in memory: a requested path is matched against the archive's member names and
never touches a filesystem, so no path can escape; malformed paths are refused before the lookup.
"""

from __future__ import annotations

import asyncio
import io
import posixpath
import tarfile
from typing import Any

import msgspec
from aiohttp import web

import bus
from gateway.auth import requires
from gateway.bodies import Strict, path, query
from gateway.http import ask, conn, json, read
from gateway.problems import Problem
from gateway.runs import PageParams
from schemas.queries import RunPage
from schemas.types import Name, RunId

routes = web.RouteTableDef()

DIFF = "diff.patch"
WORKSPACE = "workspace.tar.gz"
_MAX_PATH = 4096


@routes.get("/v1/runs/{run_id}/artifacts")
@requires("read")
async def list_(request: web.Request) -> web.Response:
    run_id = path(request, "run_id", RunId)
    page = query(request, PageParams)
    return await read(
        request, "run_artifacts", RunPage(run_id=run_id, after_seq=page.after_seq, limit=page.limit)
    )


@routes.get("/v1/runs/{run_id}/artifacts/{name}")
@requires("read")
async def download(request: web.Request) -> web.Response:
    run_id = path(request, "run_id", RunId)
    name = path(request, "name", Name)
    query(request, Strict)
    artifact = await _artifact(request, run_id, name)
    data = await _blob(conn(request), artifact["sha256"])
    return web.Response(
        body=data,
        content_type=_plain(artifact.get("media_type") or "application/octet-stream"),
        headers={"Content-Disposition": f'attachment; filename="{_safe_filename(name)}"'},
    )


@routes.get("/v1/runs/{run_id}/diff")
@requires("read")
async def diff(request: web.Request) -> web.Response:
    run_id = path(request, "run_id", RunId)
    query(request, Strict)
    artifact = await _artifact(request, run_id, DIFF)
    data = await _blob(conn(request), artifact["sha256"])
    return web.Response(body=data, content_type="text/x-diff", charset="utf-8")


@routes.get("/v1/runs/{run_id}/files")
@requires("read")
async def files(request: web.Request) -> web.Response:
    run_id = path(request, "run_id", RunId)
    query(request, Strict)
    archive = await _workspace(request, run_id)
    listing = await asyncio.to_thread(_members, archive)
    return json({"items": [{"path": name, "size": size} for name, size in listing]})


@routes.get("/v1/runs/{run_id}/files/{path:.+}")
@requires("read")
async def file(request: web.Request) -> web.Response:
    run_id = path(request, "run_id", RunId)
    wanted = _checked_path(request.match_info["path"])
    query(request, Strict)
    archive = await _workspace(request, run_id)
    data = await asyncio.to_thread(_extract, archive, wanted)
    if data is None:
        raise Problem("not-found", f"the run's workspace has no file {wanted!r}")
    return web.Response(body=data, content_type="application/octet-stream")


def _checked_path(raw: str) -> str:
    """A relative POSIX path with no `..`, no absolute start, no empty or control characters."""
    bad = (
        not raw
        or len(raw) > _MAX_PATH
        or raw.startswith("/")
        or "\\" in raw
        or any(ord(char) < 32 for char in raw)
        or any(part in {"..", "."} or not part for part in raw.split("/"))
    )
    if bad:
        raise Problem("invalid-request", "the file path must be relative, without `.`, `..` or empty parts")
    return raw


async def _artifact(request: web.Request, run_id: str, name: str) -> dict[str, Any]:
    """The last artifact of that name the run stored (the read model pages in log order)."""
    found, after = None, 0
    while True:
        answer = await ask(request, "run_artifacts", RunPage(run_id=run_id, after_seq=after, limit=500))
        page = msgspec.json.decode(answer.data)
        found = next((item for item in reversed(page["items"]) if item["name"] == name), found)
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    if found is None:
        raise Problem("not-found", f"run {run_id} has no artifact {name!r} (yet)")
    return dict(found)


async def _blob(connection: bus.Connection, sha256: str) -> bytes:
    try:
        return await connection.blobs.get(sha256)
    except bus.BlobError as exc:
        raise Problem("not-found", "the artifact's body is not in the blob store") from exc


async def _workspace(request: web.Request, run_id: str) -> bytes:
    artifact = await _artifact(request, run_id, WORKSPACE)
    return await _blob(conn(request), artifact["sha256"])


def _members(archive: bytes) -> list[tuple[str, int]]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return sorted((_name(m.name), m.size) for m in tar.getmembers() if m.isfile())


def _extract(archive: bytes, wanted: str) -> bytes | None:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and _name(member.name) == wanted:
                handle = tar.extractfile(member)
                return handle.read() if handle else None
    return None


def _name(member: str) -> str:
    return posixpath.normpath(member)  # "./src/a.py" and "src/a.py" are the same file


def _plain(media_type: str) -> str:
    return media_type.split(";")[0].strip() or "application/octet-stream"


def _safe_filename(name: str) -> str:
    return "".join(char if char.isalnum() or char in "._-" else "_" for char in name)[:200]
