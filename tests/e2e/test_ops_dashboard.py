"""The /ops dashboard in headless Chromium (Debian's package) against the three services on the real broker:
the page opens with the ops token, follows the live stream, and shows a breach without being reloaded.

The browser is driven over the Chrome DevTools Protocol with a small client below (no WebDriver needed).
The screenshot is kept under test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support.stack import ADMIN, ROOT, Stack, free_port, post_lead, sample_lead, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
OPS_TOKEN = "ops-wallboard-token-0123456789"
# Three seconds for every grade, around the clock: breaches happen while the test watches.
FAST_SLA = {
    "HANDOFF_SLA_MINUTES": json.dumps({"A": 0.05, "B": 0.05, "C": 0.05, "D": 0.05}),
    "HANDOFF_SLA_BUSINESS_HOURS": "false",
    "HANDOFF_OPS_TOKEN": OPS_TOKEN,
    "HANDOFF_WEBHOOK_ALLOW_LOOPBACK": "true",
}


class Page:
    """One browser tab over CDP: commands wait for their reply; events are kept for the test to inspect."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str, timeout: float = 30) -> None:
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout=timeout, what=f"{url} loaded")

    def wait_for(self, expression: str, *, timeout: float, what: str) -> None:
        """Until the expression is truthy in the page (as JavaScript sees it: an element counts)."""
        wait_until(lambda: self.evaluate(f"!!({expression})"), timeout=timeout, interval=0.1, what=what)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def drain(self) -> list[dict[str, Any]]:
        """Events that arrived since the last command, without waiting."""
        while True:
            try:
                self.events.append(json.loads(self._ws.recv(timeout=0.05)))
            except TimeoutError:
                return self.events

    def exceptions(self) -> list[str]:
        return [
            e["params"]["exceptionDetails"].get("exception", {}).get("description", str(e["params"]))
            for e in self.drain()
            if e.get("method") == "Runtime.exceptionThrown"
        ]


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed by the test run itself when missing."""
    subprocess.run([ROOT / "scripts/chromium.sh", "ensure"], check=True, capture_output=True, timeout=900)
    assert CHROMIUM.exists()
    return CHROMIUM


@pytest.fixture
def page(chromium: Path, tmp_path: Path) -> Iterator[Page]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    log = (tmp_path / "chromium.log").open("wb")
    process = subprocess.Popen(
        [
            str(chromium),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1440,1200",
            "about:blank",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Chromium writes the port it chose here once DevTools listens.
        active = profile / "DevToolsActivePort"
        wait_until(lambda: active.exists() and active.read_text().strip(), timeout=60, what="DevTools port")
        port = int(active.read_text().split()[0])
        targets = wait_until(
            lambda: [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"],
            timeout=30,
            what="a page target",
        )
        with connect(targets[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024) as ws:
            tab = Page(ws)
            tab.send("Page.enable")
            tab.send("Runtime.enable")
            tab.send("Emulation.setDeviceMetricsOverride", width=1440, height=1200, deviceScaleFactor=1, mobile=False)
            yield tab
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _routed(client: httpx.Client, stack: Stack, lead_id: str) -> dict[str, Any] | None:
    response = client.get(f"{stack['routing'].url}/v1/leads/{lead_id}", headers=ADMIN)
    return response.json() if response.status_code == 200 else None


def _row(table: str, lead_id: str) -> str:
    return f"document.querySelector('#{table} tbody tr[data-lead-id=\"{lead_id}\"]')"


def test_a_breach_appears_on_the_ops_dashboard_live_without_a_reload(
    make_stack: Callable[..., Stack], page: Page
) -> None:
    stack = make_stack(env=FAST_SLA).start()
    routing = stack["routing"]
    with httpx.Client(timeout=10) as client:
        # A sales tool that is down: its deliveries fail and show up under recent webhook failures.
        dead_receiver = f"http://127.0.0.1:{free_port()}/hooks/handoff"
        endpoint = client.post(
            f"{routing.url}/v1/webhook-endpoints",
            json={"url": dead_receiver, "event_types": ["lead.sla_breached"], "description": "Dialer (down)"},
            headers=ADMIN,
        )
        assert endpoint.status_code == 201, endpoint.text

        page.navigate(f"{routing.url}/ops?token={OPS_TOKEN}")
        # The token was traded for an HttpOnly cookie and left the address bar.
        assert page.evaluate("location.pathname + location.search") == "/ops"
        assert "handoff_ops" not in page.evaluate("document.cookie")
        page.wait_for("document.getElementById('live').dataset.state === 'live'", timeout=20, what="stream live")
        marker = uuid.uuid4().hex
        page.evaluate(f"window.__loadedOnce = '{marker}'")
        page.drain()
        page.events.clear()

        # One lead is touched at once (within its three seconds); the others are left to breach.
        touched = post_lead(client, stack["ingest"], sample_lead(0, company="Quick Reply GmbH")).json()["lead_id"]
        wait_until(lambda: _routed(client, stack, touched), timeout=60, interval=0.05, what="first lead routed")
        action = client.post(f"{routing.url}/v1/leads/{touched}/actions", json={"action": "touch"}, headers=ADMIN)
        assert action.status_code == 200, action.text
        ignored = [post_lead(client, stack["ingest"], sample_lead(i)).json()["lead_id"] for i in range(1, 4)]
        lead = ignored[0]

        page.wait_for(_row("open", lead), timeout=60, what="the new lead among open leads, counting down")
        page.wait_for(_row("breaches", lead), timeout=60, what="the breach row, live")
        # Each breach row names who held the lead when it breached (the first rep, then the next...) and the team.
        held = page.evaluate(
            f"Array.from(document.querySelectorAll('#breaches tbody tr[data-lead-id=\"{lead}\"]'),"
            " r => [r.cells[4].textContent, r.cells[5].textContent])"
        )
        record = _routed(client, stack, lead)
        assert record is not None
        assert ["t", record["assignments"][0]["rep_id"]] in held

        # Still the same document: nothing reloaded or navigated since the lead was posted.
        assert page.evaluate("window.__loadedOnce") == marker
        navigations = [e for e in page.drain() if e.get("method") in ("Page.frameNavigated", "Page.loadEventFired")]
        assert navigations == []
        assert int(page.evaluate("document.getElementById('events-count').textContent")) > 0

        # After the escalation ladder the leads wait in the team queue (60 minutes): their countdowns tick.
        def queued() -> bool:
            return all((r := _routed(client, stack, i)) and r["status"] == "queued" for i in ignored)

        wait_until(queued, timeout=90, interval=0.5, what="the ignored leads escalated to the queue")
        page.wait_for(
            f"{_row('open', lead)} && {_row('open', lead)}.cells[5].textContent.startsWith('59:')",
            timeout=30,
            what="the queued lead's countdown",
        )
        before = page.evaluate(f"{_row('open', lead)}.cells[5].textContent")
        page.wait_for(
            f"{_row('open', lead)}.cells[5].textContent !== '{before}'", timeout=5, what="the countdown to move"
        )
        page.wait_for(
            "document.querySelectorAll('#webhooks tbody tr').length > 0", timeout=60, what="a webhook failure"
        )
        assert "Dialer (down)" in page.evaluate("document.querySelector('#webhooks tbody').textContent")
        assert page.evaluate("document.getElementById('banner').hidden") is True
        assert page.exceptions() == []
        assert page.evaluate("window.__loadedOnce") == marker

        page.screenshot(ARTIFACTS / "ops-dashboard.png")
    assert (ARTIFACTS / "ops-dashboard.png").stat().st_size > 10_000
