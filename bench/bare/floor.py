"""`uvicorn bench.bare.floor:create_app --factory`: the bare endpoint plus only what ingest's guarantees require.

The durable floor for issue 13's ingest target. `bench/bare/app.py` stores nothing, so "0.8x bare" mixes what the
guarantees cost with what Handoff's own code costs. This endpoint pays the first part and nothing else, as cheaply
as Python allows, so the bench can show both ratios (floor/bare: the price of the guarantees; Handoff/floor: the
rest):

- the same validation as the bare endpoint (ingest's `LeadIn` through FastAPI), a UUID per lead;
- a source API key checked in constant time against its SHA-256 held in memory, before the framework runs;
- a 202 only after the lead is durably stored: one writer group-commits whatever requests are waiting (one sqlite3
  transaction per batch, WAL, synchronous=FULL), a lead row (id, dedupe key with a unique index, the normalized
  JSON) and an outbox row in that same transaction; a repeated Idempotency-Key is stored once and answered with the
  first lead's id;
- a relay in the same process that publishes the committed outbox rows to Kafka pipelined (every row of a round
  handed over, then all awaited; acks=all, idempotent producer), as a CloudEvent in binary mode (the id consumers
  dedupe on), and has the published rows deleted inside the writer's next transaction.

It leaves out what the product adds beyond the guarantees (normalization of phones and countries, quality flags,
repeats and identity hashes, sources in a database, metrics, correlation ids, limits, the overload bound). The store,
the writers and the relay are in `bench/bare/floor_store.py`; bench/ingest.py runs this beside ingest and the bare
endpoint. On the shared 2-core machine read its leads per server CPU second, not its leads/s: a pinned server's
core also runs other work, and the floor's two threads take a bigger share of it than a one-thread server does.

Settings come from the environment: FLOOR_DATABASE (the SQLite file), FLOOR_KAFKA_BOOTSTRAP, FLOOR_TOPIC,
FLOOR_TOPIC_PARTITIONS, FLOOR_API_KEY_SHA256 (hex), FLOOR_WRITER (`thread`, the default: sqlite3 in its own thread,
so the loop keeps parsing requests while a commit waits for fsync; or `loop`: sqlite3 on the event loop, which
idles the process during each fsync) and FLOOR_RELAY (`batch`, the default: one aiokafka BatchBuilder per partition
and round, as Handoff's relay does; or `send`: send() each row, ~10 us more CPU per row, measured 16 against 27 us).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from bench.bare.floor_store import FloorStore, LoopWriter, Producer, Relay, ThreadWriter, WriterUnavailable
from ingest.api import LeadIn

LEADS_PATH = "/v1/leads"
_DEDUPE_SCOPE_KEY = "floor.dedupe_key"


@dataclass(frozen=True)
class FloorSettings:
    database: str
    kafka_bootstrap: str
    topic: str
    topic_partitions: int
    api_key_sha256: bytes
    writer: str = "thread"
    relay: str = "batch"
    max_batch: int = 500
    drain_s: float = 5.0  # at shutdown, how long the relay may try to publish what is left (the outbox keeps it)

    @classmethod
    def from_env(cls) -> FloorSettings:
        return cls(
            database=os.environ.get("FLOOR_DATABASE", ".data/floor.db"),
            kafka_bootstrap=os.environ.get("FLOOR_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            topic=os.environ.get("FLOOR_TOPIC", "floor.leads.received.v1"),
            topic_partitions=int(os.environ.get("FLOOR_TOPIC_PARTITIONS", "3")),
            api_key_sha256=bytes.fromhex(os.environ["FLOOR_API_KEY_SHA256"]),
            writer=os.environ.get("FLOOR_WRITER", "thread"),
            relay=os.environ.get("FLOOR_RELAY", "batch"),
        )


# -- the app ------------------------------------------------------------------------------------------------------

_UNAUTHORIZED = b'{"detail":"missing or invalid API key"}'
_UNAVAILABLE = b'{"detail":"the lead could not be stored; retry"}'


class FloorApp(FastAPI):
    """FastAPI, with POST /v1/leads's API key checked on the raw headers before the framework spends anything."""

    key_sha256: bytes = b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == LEADS_PATH:
            token = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    token = value.removeprefix(b"Bearer ").strip()
                elif name == b"idempotency-key":
                    scope[_DEDUPE_SCOPE_KEY] = value.decode("latin-1")
            # Constant time: the digests are compared, never the key itself.
            if not hmac.compare_digest(hashlib.sha256(token).digest(), self.key_sha256):
                await _answer(send, 401, _UNAUTHORIZED)
                return
        await super().__call__(scope, receive, send)


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def accepted_body(lead_id: str) -> bytes:
    """Ingest's 202 body; the correlation id is the lead id's hex, so both sides write the same bytes per answer."""
    return b'{"lead_id":"%s","status":"accepted","duplicate_of":null,"is_test":false,"correlation_id":"%s"}' % (
        lead_id.encode(),
        lead_id.replace("-", "").encode(),
    )


def _kafka_producer(settings: FloorSettings) -> Producer:
    from aiokafka import AIOKafkaProducer

    producer: Producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id="bench-floor",
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        max_batch_size=512 * 1024,  # a whole round per partition, as Handoff's relay sizes it
    )
    return producer


async def _start_kafka(settings: FloorSettings, producer: Producer) -> None:
    """The topic created if missing (the broker does not auto-create), then the producer started."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        if settings.topic not in set(await admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(settings.topic, settings.topic_partitions, 1)])
    finally:
        await admin.close()
    await producer.start()


def create_app(
    settings: FloorSettings | None = None,
    producer: Producer | None = None,
    open_store: Callable[[str], FloorStore] = FloorStore,
) -> FastAPI:
    """POST /v1/leads: key, `LeadIn`, a UUID, stored with its outbox row by the group-committing writer, then 202.
    `producer` and `open_store` are seams for tests (a fake broker, a store that stalls or fails its commit)."""
    settings = settings or FloorSettings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        kafka = producer or _kafka_producer(settings)
        start: Callable[[], Any] = kafka.start if producer is not None else lambda: _start_kafka(settings, kafka)
        store = open_store(settings.database)
        relay = Relay(kafka, settings.topic, start, batched=settings.relay == "batch")
        relay.add(store.pending_outbox())
        relay_task = asyncio.create_task(relay.run(), name="floor-relay")
        writer_type = LoopWriter if settings.writer == "loop" else ThreadWriter
        writer = writer_type(store, relay, settings.max_batch)
        writer.start()
        app.state.writer = writer
        app.state.relay = relay
        try:
            yield
        finally:
            await writer.stop()
            await relay.drain(settings.drain_s)
            relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay_task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(kafka.stop(), 5.0)
            store.close()

    app = FloorApp(title="durable floor lead endpoint", lifespan=lifespan)
    app.key_sha256 = settings.api_key_sha256

    @app.post(LEADS_PATH, status_code=202)
    async def post_lead(lead: LeadIn, request: Request) -> Response:
        lead_id = str(uuid.uuid4())
        data = lead.model_dump_json(exclude_none=True).encode()
        event = b'{"lead_id":"%s","lead":%s}' % (lead_id.encode(), data)
        try:
            stored_id, new = await request.app.state.writer.submit(
                (lead_id, request.scope.get(_DEDUPE_SCOPE_KEY), data), event
            )
        except (sqlite3.Error, WriterUnavailable):
            return Response(_UNAVAILABLE, status_code=503, media_type="application/json", headers={"Retry-After": "1"})
        headers = None if new else {"Idempotent-Replayed": "true"}
        return Response(accepted_body(stored_id), status_code=202, media_type="application/json", headers=headers)

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b"{}", media_type="application/json")

    return app
