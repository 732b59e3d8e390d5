"""The console is served without a key, under the strict CSP, and its script uses only the public API."""

from __future__ import annotations

from pathlib import Path

from tests.gateway.conftest import System

PAGES = Path(__file__).resolve().parents[2] / "gateway" / "pages"


async def test_console_is_served_under_the_content_security_policy(system: System) -> None:
    """`/` leads to the console; its page, script and style load with no key and no inline code."""
    client = system.client
    home = await client.get("/", allow_redirects=False)
    assert home.status == 302
    assert home.headers["Location"] == "/console/"
    page = await client.get("/console/")
    assert page.status == 200
    html = await page.text()
    assert '<script src="/console/console.js"' in html
    assert "<script>" not in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    script = await client.get("/console/console.js")
    assert script.status == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert (await client.get("/console/console.css")).status == 200
    assert (await client.get("/console/secrets.txt")).status == 404


def test_console_script_uses_only_documented_endpoints_and_first_frame_auth() -> None:
    """The script calls the REST paths the gateway serves, and never puts the key in a URL."""
    script = (PAGES / "console.js").read_text()
    for path in ("/v1/runs?limit=50", "/v1/events", "/v1/runs/${runId}/events", "/v1/runs/${runId}/diff"):
        assert path in script
    assert 'type: "auth", key: key()' in script
    assert "?key=" not in script
    assert "token=" not in script
