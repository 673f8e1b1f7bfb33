"""The enrichment provider as a real HTTP server on loopback: slow, then killed, then back, under the real services."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.envelope import Event
from common.topics import LEADS_SCORED
from tests.support.contracts import validate_record
from tests.support.stack import ADMIN, Stack, free_port, post_lead, read_topic, routed, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

# A provider in the shape scoring expects: GET ?domain=... -> company facts, 404 for unknown domains.
# Domains starting with "slow-" answer after 5 s, far beyond the service's timeout.
PROVIDER = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        domain = parse_qs(urlsplit(self.path).query).get("domain", [""])[0]
        if domain.startswith("slow-"):
            time.sleep(5)
        if domain.startswith("unknown-"):
            status, body = 404, {"error": "unknown domain"}
        else:
            status, body = 200, {"company": {"name": domain.split(".")[0].title(), "employee_band": "201-500",
                                             "industry": "software", "country": "DE"}}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
server.daemon_threads = True
print("listening", flush=True)
server.serve_forever()
"""

TIMEOUT_S = 0.5
BREAKER_FAILURES = 2
BREAKER_OPEN_S = 2.0


class ProviderProcess:
    """The provider in its own process, so it can be SIGKILLed and started again on the same port."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/company"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", PROVIDER, str(self.port)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )

        def answers() -> bool:
            try:
                return httpx.get(self.url, params={"domain": "probe.com"}, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout=20, what="the provider answering")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[ProviderProcess]:
    process = ProviderProcess(free_port(), tmp_path / "provider.log")
    process.start()
    yield process
    process.kill()


def _corporate_lead(domain: str, i: int) -> dict[str, Any]:
    return {
        "email": f"buyer{i}@{domain}",
        "first_name": "Casey",
        "last_name": f"Buyer {i}",
        "job_title": "Head of Sales",
        "country": "DE",
        "form_id": "demo-request",
    }


class Scores:
    """Posts leads and times how long each takes to come out of scoring."""

    def __init__(self, client: httpx.Client, stack: Stack) -> None:
        self.client = client
        self.stack = stack
        self.latency: dict[str, float] = {}

    def post(self, domain: str) -> str:
        started = time.monotonic()
        response = post_lead(self.client, self.stack["ingest"], _corporate_lead(domain, len(self.latency)))
        assert response.status_code == 202, response.text
        lead_id = response.json()["lead_id"]
        self.latency[lead_id] = -started
        return lead_id

    def wait(self, lead_id: str, timeout: float = 120) -> dict[str, Any]:
        def scored() -> dict[str, Any] | None:
            response = self.client.get(f"{self.stack['scoring'].url}/v1/scores/{lead_id}", headers=ADMIN)
            return response.json() if response.status_code == 200 else None

        record = wait_until(scored, timeout=timeout, interval=0.05, what=f"lead {lead_id} scored")
        if self.latency[lead_id] < 0:
            self.latency[lead_id] += time.monotonic()
        return record


def _provider_status(record: dict[str, Any]) -> str:
    return next(step["detail"] for step in record["enrichment"]["steps"] if step["step"] == "provider")


def _enriched(record: dict[str, Any]) -> bool:
    return not record["enrichment"]["partial"] and _provider_status(record) == "ok"


def _domain() -> str:
    return f"co-{uuid.uuid4().hex[:8]}.com"


def test_leads_flow_partial_while_the_provider_is_slow_or_down_and_are_enriched_again_when_it_returns(
    make_stack: Callable[..., Stack], provider: ProviderProcess
) -> None:
    stack = make_stack(
        env={
            "HANDOFF_ENRICHMENT_URL": provider.url,
            "HANDOFF_ENRICHMENT_TIMEOUT_S": str(TIMEOUT_S),
            "HANDOFF_ENRICHMENT_ATTEMPTS": "1",
            "HANDOFF_ENRICHMENT_BREAKER_FAILURES": str(BREAKER_FAILURES),
            "HANDOFF_ENRICHMENT_BREAKER_OPEN_S": str(BREAKER_OPEN_S),
        }
    ).start()
    with httpx.Client(timeout=10) as client:
        scores = Scores(client, stack)

        # Up: the provider's facts fill the company and count in the score.
        healthy = scores.wait(scores.post(_domain()))
        assert _enriched(healthy), healthy["enrichment"]
        assert healthy["enrichment"]["company"]["employee_band"] == "201-500"
        assert "company_mid_market" in {rule["id"] for rule in healthy["score"]["fired"]}
        unknown = scores.wait(scores.post(f"unknown-{_domain()}"))
        assert _provider_status(unknown) == "not_found" and not unknown["enrichment"]["partial"]

        # Slow: the lead waits for the timeout only, then is scored with what scoring knows.
        slow_id = scores.post(f"slow-{_domain()}")
        slow = scores.wait(slow_id)
        assert slow["enrichment"]["partial"] is True and _provider_status(slow) == "timeout"
        assert scores.latency[slow_id] < 4.5, "a lead must not wait for the slow provider's answer"

        # Down: every lead is still scored (and routed), marked partial with the provider's status.
        provider.kill()
        outage = [scores.post(_domain()) for _ in range(8)]
        during = [scores.wait(lead_id) for lead_id in outage]
        assert all(record["enrichment"]["partial"] for record in during)
        statuses = [_provider_status(record) for record in during]
        assert set(statuses) <= {"unavailable", "circuit_open"}, statuses
        assert "circuit_open" in statuses, "after repeated failures the breaker stops asking"
        assert all("company_mid_market" not in {r["id"] for r in record["score"]["fired"]} for record in during)
        wait_until(lambda: len(routed(client, stack["routing"], outage)) == len(outage), timeout=60, what="routed")

        # Back: once the breaker's window has passed, new leads are enriched again.
        provider.start()
        back_at = time.monotonic()
        wait_until(
            lambda: _enriched(scores.wait(scores.post(_domain()))),
            timeout=BREAKER_OPEN_S + 20,
            interval=0.2,
            what="a lead enriched after the provider returned",
        )
        recovered_after = time.monotonic() - back_at
        after = [scores.wait(scores.post(_domain())) for _ in range(5)]
        assert all(_enriched(record) for record in after), [_provider_status(r) for r in after]

    outage_latency = [scores.latency[lead_id] for lead_id in outage]
    print(
        f"post->scored during the outage: max {max(outage_latency) * 1000:.0f} ms, "
        f"slow provider lead {scores.latency[slow_id] * 1000:.0f} ms, "
        f"enriched again {recovered_after:.1f} s after the provider returned"
    )
    # What went out on Kafka honours the lead.scored contract, partial or not.
    records = asyncio.run(read_topic(stack.bootstrap, stack.topic(LEADS_SCORED)))
    assert len(records) == len(scores.latency)
    for record in records:
        assert not validate_record(record.topic, record.key, record.value, record.headers, namespace=stack.namespace)
    published = {Event.from_record(r.key, r.value, r.headers).subject for r in records}
    assert published == set(scores.latency)
