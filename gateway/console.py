"""The console: a run list with live status and a run view, as static files that use the public API."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

PAGES = Path(__file__).with_name("pages")
_FILES = {"console.js": "text/javascript", "console.css": "text/css"}

routes = web.RouteTableDef()


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console/")


@routes.get("/console/")
async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGES / "console.html", headers={"Content-Type": "text/html; charset=utf-8"})


@routes.get("/console/{name}")
async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in _FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(PAGES / name, headers={"Content-Type": f"{_FILES[name]}; charset=utf-8"})
