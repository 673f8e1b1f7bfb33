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
and round, as Handoff's relay does; or `send`: send() each row, ~10 us more CPU per row, measured 16 against 27 us)
and FLOOR_FRONT (`fastapi`, the default: the lead goes through the framework as at the bare endpoint; or `asgi`: a
valid lead is validated with the same `LeadIn` and stored on raw ASGI, the framework's cost left out, as Handoff's
own fast path leaves it out).
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
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

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
    front: str = "fastapi"
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
            front=os.environ.get("FLOOR_FRONT", "fastapi"),
        )


# -- the app ------------------------------------------------------------------------------------------------------

_UNAUTHORIZED = b'{"detail":"missing or invalid API key"}'
_UNAVAILABLE = b'{"detail":"the lead could not be stored; retry"}'


class FloorApp(FastAPI):
    """FastAPI, with POST /v1/leads's API key checked on the raw headers before the framework spends anything; with
    `raw_leads` a valid lead is stored and answered there too (as Handoff's LeadFastPath does), anything else goes
    to FastAPI with its body, so its 422s stay the framework's."""

    key_sha256: bytes = b""
    raw_leads: bool = False

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
            if self.raw_leads and scope["method"] == "POST":
                messages: list[Message] = []
                lead = await _valid_lead(receive, messages)
                if lead is not None:
                    status, body, headers = await store_lead(self.state.writer, lead, scope.get(_DEDUPE_SCOPE_KEY))
                    await _answer(send, status, body, [(k.encode(), v.encode()) for k, v in headers.items()])
                    return
                receive = _replay(messages, receive)
        await super().__call__(scope, receive, send)


async def _valid_lead(receive: Receive, messages: list[Message]) -> LeadIn | None:
    """The body as a `LeadIn`, or None (invalid, or the client left): FastAPI then answers it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    try:
        return LeadIn.model_validate_json(b"".join(chunks))
    except ValidationError:
        return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def store_lead(
    writer: ThreadWriter | LoopWriter, lead: LeadIn, dedupe_key: str | None
) -> tuple[int, bytes, dict[str, str]]:
    """A UUID, the normalized JSON and its event, stored by the writer: the status, body and headers to answer."""
    lead_id = str(uuid.uuid4())
    data = lead.model_dump_json(exclude_none=True).encode()
    event = b'{"lead_id":"%s","lead":%s}' % (lead_id.encode(), data)
    try:
        stored_id, new = await writer.submit((lead_id, dedupe_key, data), event)
    except (sqlite3.Error, WriterUnavailable):
        return 503, _UNAVAILABLE, {"Retry-After": "1"}
    return 202, accepted_body(stored_id), {} if new else {"Idempotent-Replayed": "true"}


async def _answer(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
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
    app.raw_leads = settings.front == "asgi"

    @app.post(LEADS_PATH, status_code=202)
    async def post_lead(lead: LeadIn, request: Request) -> Response:
        status, body, headers = await store_lead(request.app.state.writer, lead, request.scope.get(_DEDUPE_SCOPE_KEY))
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b"{}", media_type="application/json")

    return app
