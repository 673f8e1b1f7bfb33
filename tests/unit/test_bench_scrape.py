"""The bench reads what each consumer's poll loop did over a latency level from the service's own /metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from bench import scrape
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, CollectorRegistry]]:
    registry = CollectorRegistry()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", registry
    finally:
        server.shutdown()


def test_a_level_reads_as_polls_their_size_and_time(metrics_server: tuple[str, CollectorRegistry]) -> None:
    url, registry = metrics_server
    batches = Histogram("handoff_consumer_batch_seconds", "", registry=registry)
    events = Counter("handoff_consumer_events_total", "", ["topic", "type", "result"], registry=registry)
    delay = Histogram("handoff_outbox_publish_delay_seconds", "", registry=registry)
    batches.observe(1.0)  # before the level: not counted
    events.labels("t", "lead.scored", "ok").inc(7)
    before = scrape.sample(url)

    for _ in range(4):
        batches.observe(0.05)
    events.labels("t", "lead.scored", "ok").inc(150)
    events.labels("t", "lead.scored", "duplicate").inc(10)  # every label set counts
    delay.observe(0.004)
    delay.observe(0.006)
    figures = scrape.difference(before, scrape.sample(url), seconds=2.0)

    assert figures["polls_per_s"] == 2.0
    assert figures["events_per_poll"] == 40.0
    assert figures["apply_ms_per_poll"] == 50.0
    assert figures["apply_share"] == 0.1
    assert figures["relay_delay_ms"] == 5.0
    assert figures["webhook_attempt_ms"] is None  # no webhook attempts in this service
    line = scrape.describe("routing", figures)
    assert "2.0 polls/s x 40.0 events, 50.0 ms each (10 % busy), commit to ack 5.0 ms" in line


def test_a_service_that_does_not_answer_reads_as_nothing() -> None:
    assert scrape.sample("http://127.0.0.1:9", timeout=0.5) == {}
    assert scrape.difference({}, {}, 1.0) == {}
    assert scrape.describe("routing", {}) == "routing -"
