"""Real processes for integration and end-to-end tests: the broker, PostgreSQL, and the services under uvicorn."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll with a deadline (never a bare sleep); returns the first truthy value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def wait_until_async(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Broker:
    """A Kafka broker run by scripts/kafka.sh; `owned` when this test run started it (and so stops it)."""

    port: int
    data_dir: Path | None = None
    owned: bool = False
    # Chosen once and kept, so a restart binds the same controller port (port + 1 may belong to a client socket).
    controller_port: int = field(default_factory=lambda: free_port())

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, KAFKA_PORT=str(self.port))
        if self.data_dir is not None:
            env["KAFKA_DATA_DIR"] = str(self.data_dir)
            env["KAFKA_CONTROLLER_PORT"] = str(self.controller_port)
        return env

    def running(self) -> bool:
        return (
            subprocess.run([ROOT / "scripts/kafka.sh", "status"], env=self._env(), capture_output=True).returncode == 0
        )

    def start(self) -> None:
        subprocess.run([ROOT / "scripts/kafka.sh", "start"], env=self._env(), check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([ROOT / "scripts/kafka.sh", "stop"], env=self._env(), check=True, capture_output=True)


@dataclass
class Service:
    """One service as its own uvicorn process, as in production."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                # routing as its image runs it: SLA timers in service before its HTTP side loads (routing.serve)
                *(
                    ["routing.serve"]
                    if self.name == "routing"
                    else ["uvicorn", f"{self.name}.app:create_app", "--factory"]
                ),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.extra_args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.kill()  # a service that never became ready must not outlive the test that started it
                raise

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log_tail()}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=timeout, what=f"{self.name} ready")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Stack:
    """The three services wired to one broker and one namespace of topics, each on its own store."""

    def __init__(
        self,
        tmp: Path,
        bootstrap: str,
        *,
        database_urls: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        seed: str | None = None,
        rules: str | None = None,
    ) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.bootstrap = bootstrap
        self.namespace = f"t{uuid.uuid4().hex[:10]}."
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("HANDOFF_", "INGEST_", "SCORING_", "ROUTING_"))
        }
        base.update(
            HANDOFF_ENV="test",
            HANDOFF_ADMIN_TOKEN=ADMIN_TOKEN,
            HANDOFF_KAFKA_BOOTSTRAP=bootstrap,
            HANDOFF_TOPIC_NAMESPACE=self.namespace,
            HANDOFF_TOPIC_PARTITIONS="3",
            HANDOFF_DATA_DIR=str(tmp / "data"),
            HANDOFF_LOG_FORMAT="json",
            HANDOFF_CONSUMER_STALL_S="20",
        )
        if seed is not None:
            (tmp / "seed.yaml").write_text(seed)
            base["HANDOFF_SEED_FILE"] = str(tmp / "seed.yaml")
        if rules is not None:
            (tmp / "rules.yaml").write_text(rules)
            base["HANDOFF_RULES_FILE"] = str(tmp / "rules.yaml")
        base.update(env or {})
        for name, url in (database_urls or {}).items():
            base[f"{name.upper()}_DATABASE_URL"] = url
        self.env = base
        self.services = {
            name: Service(name, free_port(), dict(base), tmp / f"{name}.log")
            for name in ("ingest", "scoring", "routing")
        }

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def start(self) -> Stack:
        for service in self.services.values():
            service.start(wait=False)
        for service in self.services.values():
            service.wait_ready()
        return self

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()

    def topic(self, name: str) -> str:
        return f"{self.namespace}{name}"

    def all_logs(self) -> str:
        return "\n".join(s.logs() for s in self.services.values())


def post_lead(client: httpx.Client, ingest: Service, lead: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post(f"{ingest.url}/v1/leads", json=lead, headers={**ADMIN, **headers})


def sample_lead(i: int, **overrides: Any) -> dict[str, Any]:
    lead = {
        "email": f"lead{i}-{uuid.uuid4().hex[:6]}@example.org",
        "first_name": "Test",
        "last_name": f"Lead {i}",
        "company": "Example Org",
        "job_title": "Head of Sales",
        "country": "DE",
    }
    lead.update(overrides)
    return lead


def routed(client: httpx.Client, routing: Service, lead_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The routing record of each lead that has one."""
    found: dict[str, dict[str, Any]] = {}
    for lead_id in lead_ids:
        response = client.get(f"{routing.url}/v1/leads/{lead_id}", headers=ADMIN)
        if response.status_code == 200:
            found[lead_id] = response.json()
    return found


async def read_topic(bootstrap: str, topic: str, *, timeout: float = 5.0) -> list[Any]:
    """Every record on a topic from the beginning (stops when nothing arrives for a moment)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch and records:
                break
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


async def produce_raw(
    bootstrap: str,
    topic: str,
    value: bytes,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, headers=headers or [])
    finally:
        await producer.stop()
