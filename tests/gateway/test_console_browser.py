"""The console in a real (headless) Chromium: sign in, see the run list live, open a run, see its diff."""

from __future__ import annotations

from pathlib import Path

from tests.gateway._browser import browser
from tests.gateway._runs import FakeExecutor
from tests.gateway.conftest import TENANT, System
from tests.gateway.test_commands import create_project

DIFF = b"diff --git a/greet.sh b/greet.sh\n+echo shout\n"
HOSTILE = "<b>bold</b><img src=x onerror=\"document.title='owned'\"> greet"


async def test_the_console_shows_runs_live_and_a_run_with_its_steps_and_diff(
    system: System, tmp_path: Path
) -> None:
    """A run started after the page opened appears in the list by itself; its page shows steps and diff."""
    console = str(system.client.make_url("/console/"))
    async with browser(tmp_path / "profile") as page:
        await page.navigate(console)
        assert await page.until("!document.getElementById('signin').hidden")
        await page.evaluate(f"sessionStorage.setItem('swarm-key', {system.admin!r}); location.reload()")
        assert await page.until("document.getElementById('live').textContent === 'live'")

        body = {"project_id": await create_project(system), "instructions": HOSTILE}
        started = await system.client.post("/v1/runs", json=body, headers=system.auth())
        run = await started.json()
        executor = FakeExecutor(system.conn, TENANT, run["id"])
        await executor.start()
        await executor.message(1)
        await executor.artifact("diff.patch", "diff", DIFF, "text/x-diff")
        await executor.succeed()
        status = f"document.querySelector('#row-{run['id']} .status')?.textContent"
        assert await page.until(f"{status} === 'succeeded'")
        shown = f"document.querySelector('#row-{run['id']} .instructions').textContent"
        assert await page.evaluate(shown) == HOSTILE  # shown as text: no markup was interpreted
        assert await page.evaluate("document.querySelector('#runrows img, #runrows b') === null")

        await page.navigate(f"{console}#run/{run['id']}")
        steps = await page.until(
            "document.getElementById('steps').innerText.includes('succeeded') && "
            "document.getElementById('steps').innerText"
        )
        assert "started (attempt 1" in steps
        assert "» step 1" in steps
        diff = await page.until(
            "document.getElementById('diff').textContent.includes('echo shout') && "
            "document.getElementById('diff').textContent"
        )
        assert diff == DIFF.decode()
        errors = await page.evaluate("document.getElementById('run-meta').textContent")
        assert errors.startswith("succeeded")
