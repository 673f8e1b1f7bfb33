"""The durable floor (bench/bare/floor.py) keeps the guarantees it stands for: a 202 only after the lead's row is
committed, a repeated Idempotency-Key stored once, events published from the outbox and then deleted."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench.bare.floor import FloorSettings, create_app
from bench.bare.floor_store import FloorStore
from fastapi import FastAPI

from tests.support.stack import wait_until_async

pytestmark = pytest.mark.unit

KEY = "floor-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LEAD = {"email": "jane@example.org", "first_name": "Jane"}


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes, dict[str, bytes]]] = []

    def append(self, *, timestamp: int | None, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> object:
        self.records.append((key, value, dict(headers)))
        return object()  # room for it (aiokafka answers None when the batch is full)


class FakeProducer:
    """The producer API the relay uses, in memory; `down` refuses every delivery as an unreachable broker would."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.published: list[tuple[bytes, bytes, dict[str, bytes]]] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def _delivery(self, records: list[tuple[bytes, bytes, dict[str, bytes]]]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.down:
            future.set_exception(ConnectionError("broker unreachable"))
        else:
            self.published.extend(records)
            future.set_result(None)
        return future

    async def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> asyncio.Future[Any]:
        return self._delivery([(key, value, dict(headers))])

    @staticmethod
    def _partitioner(key: bytes, all_partitions: list[int], available: list[int]) -> int:
        return all_partitions[0]

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        return self._delivery(batch.records)


class StalledStore(FloorStore):
    """Holds each transaction between its inserts and its COMMIT until the test lets it go (or fails the COMMIT)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.at_commit = threading.Event()
        self.go = threading.Event()
        self.fail = False

    def _commit(self) -> None:
        self.at_commit.set()
        assert self.go.wait(10)
        if self.fail:
            raise sqlite3.OperationalError("disk I/O error")
        super()._commit()


def settings(tmp_path: Path, relay: str = "batch", drain_s: float = 5.0, front: str = "fastapi") -> FloorSettings:
    return FloorSettings(
        database=str(tmp_path / "floor.db"),
        kafka_bootstrap="unused:9092",
        topic="floor.leads.received.v1",
        topic_partitions=1,
        api_key_sha256=hashlib.sha256(KEY.encode()).digest(),
        relay=relay,
        drain_s=drain_s,
        front=front,
    )


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:
            yield client


def committed(tmp_path: Path, query: str) -> list[tuple[Any, ...]]:
    """What another connection sees: committed rows only."""
    with sqlite3.connect(tmp_path / "floor.db") as conn:
        return list(conn.execute(query))


def opener(into: list[StalledStore]) -> Callable[[str], FloorStore]:
    def open_store(path: str) -> FloorStore:
        store = StalledStore(path)
        into.append(store)
        return store

    return open_store


@pytest.mark.parametrize("front", ["fastapi", "asgi"])
async def test_a_lead_is_answered_202_only_once_its_row_is_committed(tmp_path: Path, front: str) -> None:
    stores: list[StalledStore] = []
    app = create_app(settings(tmp_path, front=front), FakeProducer(), open_store=opener(stores))
    async with serving(app) as client:
        post = asyncio.create_task(client.post("/v1/leads", json=LEAD, headers=AUTH))
        assert await asyncio.to_thread(stores[0].at_commit.wait, 10)
        # Inserted, not committed: no answer yet, and nothing another connection could read.
        assert not post.done()
        assert committed(tmp_path, "SELECT id FROM leads") == []
        stores[0].go.set()
        answer = await post
    assert answer.status_code == 202
    assert committed(tmp_path, "SELECT id FROM leads") == [(answer.json()["lead_id"],)]


async def test_a_commit_that_fails_is_a_503_and_stores_nothing(tmp_path: Path) -> None:
    stores: list[StalledStore] = []
    app = create_app(settings(tmp_path), FakeProducer(), open_store=opener(stores))
    async with serving(app) as client:
        post = asyncio.create_task(client.post("/v1/leads", json=LEAD, headers=AUTH))
        assert await asyncio.to_thread(stores[0].at_commit.wait, 10)
        stores[0].fail = True
        stores[0].go.set()
        answer = await post
    assert answer.status_code == 503
    assert committed(tmp_path, "SELECT count(*) FROM leads") == [(0,)]
    assert committed(tmp_path, "SELECT count(*) FROM outbox") == [(0,)]


@pytest.mark.parametrize(("relay", "front"), [("batch", "fastapi"), ("send", "fastapi"), ("batch", "asgi")])
async def test_a_repeated_idempotency_key_is_stored_and_published_once(tmp_path: Path, relay: str, front: str) -> None:
    producer = FakeProducer()
    app = create_app(settings(tmp_path, relay, front=front), producer)
    headers = {**AUTH, "Idempotency-Key": "retry-me"}
    async with serving(app) as client:
        first = await client.post("/v1/leads", json=LEAD, headers=headers)
        # A retry later, and two at once (one group commit may carry both).
        again = await client.post("/v1/leads", json=LEAD, headers=headers)
        both = await asyncio.gather(*(client.post("/v1/leads", json=LEAD, headers=headers) for _ in range(2)))
        await wait_until_async(lambda: producer.published, timeout=5, what="the event published")
    lead_id = first.json()["lead_id"]
    assert [a.status_code for a in (first, again, *both)] == [202] * 4
    assert {a.json()["lead_id"] for a in (again, *both)} == {lead_id}
    assert again.headers["idempotent-replayed"] == "true"
    assert committed(tmp_path, "SELECT id, dedupe_key FROM leads") == [(lead_id, "retry-me")]
    assert [(key, event["ce_id"]) for key, _, event in producer.published] == [(lead_id.encode(), lead_id.encode())]


async def test_published_rows_are_deleted_by_the_next_transaction(tmp_path: Path) -> None:
    producer = FakeProducer()
    app = create_app(settings(tmp_path), producer)
    async with serving(app) as client:
        first = (await client.post("/v1/leads", json=LEAD, headers=AUTH)).json()["lead_id"]
        await wait_until_async(lambda: app.state.relay.published == 1, timeout=5, what="the first row published")
        second = (await client.post("/v1/leads", json=LEAD, headers=AUTH)).json()["lead_id"]
        assert first not in [key for (key,) in committed(tmp_path, "SELECT key FROM outbox")]
        await wait_until_async(lambda: len(producer.published) == 2, timeout=5, what="the second row published")
    assert [key for key, _, _ in producer.published] == [first.encode(), second.encode()]


async def test_rows_a_broker_outage_left_in_the_outbox_are_published_after_a_restart(tmp_path: Path) -> None:
    async with serving(create_app(settings(tmp_path, drain_s=0.05), FakeProducer(down=True))) as client:
        answer = await client.post("/v1/leads", json=LEAD, headers=AUTH)
    assert answer.status_code == 202  # ingest never waits for Kafka
    producer = FakeProducer()
    async with serving(create_app(settings(tmp_path), producer)):
        await wait_until_async(lambda: producer.published, timeout=5, what="the held row published")
    assert [key for key, _, _ in producer.published] == [answer.json()["lead_id"].encode()]


@pytest.mark.parametrize("front", ["fastapi", "asgi"])
async def test_a_wrong_key_or_an_invalid_field_is_refused_and_stores_nothing(tmp_path: Path, front: str) -> None:
    async with serving(create_app(settings(tmp_path, front=front), FakeProducer())) as client:
        wrong = await client.post("/v1/leads", json=LEAD, headers={"Authorization": "Bearer nope"})
        missing = await client.post("/v1/leads", json=LEAD)
        invalid = await client.post("/v1/leads", json={"email": ["not", "text"]}, headers=AUTH)
    assert (wrong.status_code, missing.status_code, invalid.status_code) == (401, 401, 422)
    assert invalid.json()["detail"][0]["loc"] == ["body", "email"]
    assert committed(tmp_path, "SELECT count(*) FROM leads") == [(0,)]
