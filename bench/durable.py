"""The durable floor: the bare chain's stages (bench.chain) plus only the bookkeeping Handoff's guarantees need, as
cheap as Python allows (raw sqlite3, WAL, synchronous=FULL, executemany, one transaction per batch): what Handoff
loses against it is its own cost, what it loses against the bare chain is the guarantees' price.
`python -m bench.chain source|forward|webhook --durable DIR [--url U] ...`. Every round: BEGIN; claim the batch's
event ids (a seen id is skipped); a state and an outbox row per fresh record; the previous round's webhook attempts;
DELETE what the previous round published; COMMIT; publish (or POST); commit the offsets. A restarted stage first
publishes what its outbox still holds. The source group-commits and takes t0 after its commit, as ingest's 202."""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hashlib
import hmac
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import httpx
import orjson
from aiokafka import AIOKafkaProducer

from bench.chain import Stage, _ready, _settings, _value, create_topics, wait_for_go
from bench.util import CpuMeter, broker_pid, cpu_per_lead, summarize
from common.kafka import new_consumer, new_producer

SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (key BLOB PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL,
    headers BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (id BLOB PRIMARY KEY, status INTEGER NOT NULL, at REAL NOT NULL) WITHOUT ROWID;
"""
SOURCE_GROUP = 500  # records per source transaction when it runs flat out (the consumers' batch size)
CONCURRENCY = 32  # routing's default webhook_concurrency
SECRET = b"floor-bench-secret-0123456789abcdef"


class Incoming(NamedTuple):
    id: bytes
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


Outgoing = tuple[str, bytes, bytes, bytes]  # topic (or URL), key, value, headers (JSON pairs)
Row = tuple[int, str, bytes, bytes, bytes]  # an outbox row: id first


@functools.lru_cache(maxsize=64)
def _claim_sql(n: int) -> str:
    # One statement per batch: RETURNING names only the ids inserted, so a seen id is skipped without a read.
    return "INSERT INTO processed (id) VALUES " + ",".join(["(?)"] * n) + " ON CONFLICT DO NOTHING RETURNING id"


class Store:
    """One stage's SQLite file: what it processed, its state, its outbox, its delivery attempts."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.next_id = (self.db.execute("SELECT max(id) FROM outbox").fetchone()[0] or 0) + 1
        self.published_below = 0  # outbox ids below it were delivered: the next round deletes them
        self.deleted_below = 0

    def pending(self) -> list[Row]:
        """Rows committed but not known delivered (a crash between commit and publish): publish them first."""
        return self.db.execute("SELECT id, topic, key, value, headers FROM outbox ORDER BY id").fetchall()

    def round(
        self,
        batch: Sequence[Incoming],
        emit: Callable[[Incoming], Outgoing] | None,
        *,
        attempts: Sequence[tuple[bytes, int, float]] = (),
        dedupe: bool = True,
    ) -> tuple[list[Incoming], list[Row]]:
        """One transaction: the fresh records of `batch`, their state and outbox rows, `attempts`, the deletion of
        what was published. Returns the fresh records and their outbox rows (ids assigned)."""
        db = self.db
        db.execute("BEGIN")
        try:
            fresh = self._fresh(batch) if dedupe and batch else list(batch)
            if fresh:
                db.executemany(
                    "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", [(r.key, r.value) for r in fresh]
                )
            rows: list[Row] = []
            if emit is not None and fresh:
                rows = [(self.next_id + i, *emit(r)) for i, r in enumerate(fresh)]
                db.executemany("INSERT INTO outbox (id, topic, key, value, headers) VALUES (?, ?, ?, ?, ?)", rows)
            if attempts:
                db.executemany("INSERT OR REPLACE INTO attempts (id, status, at) VALUES (?, ?, ?)", attempts)
            if self.published_below > self.deleted_below:
                db.execute("DELETE FROM outbox WHERE id < ?", (self.published_below,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.deleted_below = self.published_below
        self.next_id += len(rows)
        return fresh, rows

    def _fresh(self, batch: Sequence[Incoming]) -> list[Incoming]:
        claimed = {row[0] for row in self.db.execute(_claim_sql(len(batch)), [r.id for r in batch])}
        fresh = []
        for record in batch:
            if record.id in claimed:
                claimed.discard(record.id)  # a second copy within the batch is a duplicate too
                fresh.append(record)
        return fresh

    def mark_published(self, rows: Sequence[Row]) -> None:
        """Every row up to the last of `rows` is delivered (rounds publish in order): the next round deletes them."""
        if rows:
            self.published_below = max(self.published_below, rows[-1][0] + 1)


def incoming(key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]]) -> Incoming:
    pairs = list(headers)
    event_id = next((v for k, v in pairs if k == "ce_id"), None)
    return Incoming(event_id or uuid.uuid4().bytes, key or b"", value or b"", pairs)


def forward_headers(record: Incoming) -> bytes:
    """The record's headers with a new event id (the outgoing event is a new event), as JSON for the outbox."""
    pairs = [[k, v.decode()] for k, v in record.headers if k != "ce_id"]
    pairs.append(["ce_id", uuid.uuid4().hex])
    return orjson.dumps(pairs)


def kafka_headers(stored: bytes, extra: Sequence[tuple[str, bytes]] = ()) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in orjson.loads(stored)] + list(extra)


def sign(msg_id: str, timestamp: int, body: bytes, secret: bytes = SECRET) -> str:
    """Standard Webhooks: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`."""
    digest = hmac.new(secret, b"%s.%d.%s" % (msg_id.encode(), timestamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_body(record: Incoming) -> bytes:
    # The receiver keys arrivals by the body's lead_id: the floor's keys are lead ids.
    body = b'{"type":"lead.assigned","timestamp":%d,"data":{"lead_id":"%s","record":%s}}'
    return body % (int(time.time()), record.key, record.value)


async def _send(producer: AIOKafkaProducer, rows: Sequence[Row], extra: Sequence[tuple[str, bytes]] = ()) -> list[Any]:
    """Every row handed to the producer (pipelined): the delivery futures."""
    return [
        await producer.send(topic, value=value, key=key, headers=kafka_headers(headers, extra))
        for _id, topic, key, value, headers in rows
    ]


async def _recover(store: Store, producer: AIOKafkaProducer) -> None:
    pending = store.pending()
    await asyncio.gather(*await _send(producer, pending))
    store.mark_published(pending)


def _store(args: argparse.Namespace, name: str) -> Store:
    folder = Path(args.durable)
    folder.mkdir(parents=True, exist_ok=True)
    return Store(folder / f"{name}.db")


async def source(args: argparse.Namespace) -> dict[str, Any]:
    """Group-commit the records due (all of them flat out, in groups), t0 = after the commit, then publish; the
    next group commits while this one is in flight (as ingest's relay runs beside its request handlers)."""
    store = _store(args, "source")
    producer = new_producer(_settings(args.bootstrap, "floor-source"))
    await producer.start()
    await producer.partitions_for(args.out)  # the topic's metadata before the clock starts
    await _recover(store, producer)
    try:
        # Warm-up records through the same path (t0 `-`), then READY and the parent's go (bench.chain `source`).
        if args.warm:
            await _source_rounds(store, producer, args, args.warm)
            await wait_for_go()
        start = time.time() + 0.2
        await _source_rounds(store, producer, args, args.n, start)
        store.round([], None)  # deletes the last rows published
        done = time.time()
    finally:
        await producer.stop()
    return {"sent": args.n, "start": start, "done": done}


async def _source_rounds(
    store: Store, producer: AIOKafkaProducer, args: argparse.Namespace, n: int, start: float = 0
) -> None:
    """`n` records (warm-up ones without a `start`: flat out, t0 `-`)."""
    rate, size, warm = (args.rate, args.size, False) if start else (0.0, args.size, True)
    emit = functools.partial(_emit_source, args.out)
    previous: asyncio.Future[None] | None = None
    sent = 0
    while sent < n:
        if rate:
            due = min(n, int((time.time() - start) * rate) + 1)
            if due <= sent:
                await asyncio.sleep(max(0.0, start + sent / rate - time.time()))
                continue
        else:
            due = n
        group = [
            Incoming(b"", str(uuid.uuid4()).encode(), _value(size, i), [])
            for i in range(sent, min(due, sent + SOURCE_GROUP))
        ]
        _fresh, rows = store.round(group, emit, dedupe=False)
        t0 = b"-" if warm else repr(time.time()).encode()
        previous = asyncio.ensure_future(_settle(store, rows, await _send(producer, rows, [("t0", t0)]), previous))
        sent += len(group)
    if previous is not None:
        await previous


def _emit_source(topic: str, record: Incoming) -> Outgoing:
    return (topic, record.key, record.value, orjson.dumps([["ce_id", uuid.uuid4().hex]]))


async def _settle(store: Store, rows: list[Row], futures: list[Any], previous: asyncio.Future[None] | None) -> None:
    # In order: a group is published only once every group before it is.
    if previous is not None:
        await previous
    await asyncio.gather(*futures)
    store.mark_published(rows)


async def forward(args: argparse.Namespace) -> dict[str, Any]:
    store = _store(args, args.group)
    settings = _settings(args.bootstrap, args.group)
    consumer = new_consumer(settings, [args.input])
    producer = new_producer(settings)
    await consumer.start()
    await producer.start()
    await _ready(consumer)
    await _recover(store, producer)
    seen = forwarded = 0

    def emit(record: Incoming) -> Outgoing:
        value = _value(args.size, seen) if args.size else record.value
        return (args.out, record.key, value, forward_headers(record))

    try:
        while seen < args.n:
            batches = await consumer.getmany(timeout_ms=200, max_records=settings.consumer_batch_size)
            batch = [incoming(r.key, r.value, r.headers) for records in batches.values() for r in records]
            if not batch:
                continue
            _fresh, rows = store.round(batch, emit)
            await asyncio.gather(*await _send(producer, rows))
            store.mark_published(rows)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items() if records})
            seen += len(batch)
            forwarded += len(rows)
        store.round([], None)
    finally:
        await producer.stop()
        await consumer.stop()
    return {"seen": seen, "forwarded": forwarded}


async def webhook(args: argparse.Namespace) -> dict[str, Any]:
    """The last hop: dedupe and a delivery row per record in one transaction, then a signed POST each over a
    keep-alive pool; the results go into the next round's transaction, which deletes the delivered rows. Prints
    `<key> <answered time> <t0>` per delivery, as `observe` does."""
    store = _store(args, args.group)
    settings = _settings(args.bootstrap, args.group)
    consumer = new_consumer(settings, [args.input])
    await consumer.start()
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY, keepalive_timeout=60))
    await _ready(consumer)

    def emit(record: Incoming) -> Outgoing:
        t0 = next((v for k, v in record.headers if k == "t0"), b"-").decode()
        return (args.url, record.key, webhook_body(record), orjson.dumps([["ce_id", uuid.uuid4().hex], ["t0", t0]]))

    attempts: list[tuple[bytes, int, float]] = []
    seen = delivered = 0
    try:
        while seen < args.n:
            batches = await consumer.getmany(timeout_ms=200, max_records=settings.consumer_batch_size)
            batch = [incoming(r.key, r.value, r.headers) for records in batches.values() for r in records]
            if not batch:
                continue
            _fresh, rows = store.round(batch, emit, attempts=attempts)
            offsets = {tp: records[-1].offset + 1 for tp, records in batches.items() if records}
            results = await asyncio.gather(consumer.commit(offsets), *(_post(http, row) for row in rows))
            attempts = list(results[1:])
            if any(status >= 300 for _id, status, _at in attempts):
                # The bench receiver answers 200: a failure means the measurement is void (the floor keeps no retry).
                raise RuntimeError("a webhook delivery failed")
            store.mark_published(rows)
            done = zip(rows, attempts, strict=True)
            print(
                "".join(f"{r[2].decode()} {a[2]!r} {orjson.loads(r[4])[1][1]}\n" for r, a in done), end="", flush=True
            )
            seen += len(batch)
            delivered += len(rows)
        store.round([], None, attempts=attempts)
    finally:
        await http.close()
        await consumer.stop()
    return {"seen": seen, "delivered": delivered}


async def _post(http: aiohttp.ClientSession, row: Row) -> tuple[bytes, int, float]:
    _id, url, _key, body, headers = row
    msg_id = orjson.loads(headers)[0][1]
    now = int(time.time())
    sent = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": sign(msg_id, now, body),
    }
    try:
        async with http.post(url, data=body, headers=sent) as response:
            await response.read()
            return msg_id.encode(), response.status, time.time()
    except aiohttp.ClientError:
        return msg_id.encode(), 599, time.time()


# -- the parent's side: the floor's chain, as bench.e2e runs the bare one ------------------------------------------

WARM = 30  # records through every chain before the measured ones (about ten a partition)


def floor_chain(
    bootstrap: str, sizes: list[int], receiver: Any, folder: Path, *, n: int, rate: float = 0.0, wait_s: float = 120
) -> dict[str, Any]:
    """durable source -> durable forward -> durable forward -> durable webhook stage -> `receiver` (a started
    bench.receiver Service) over 3 fresh topics; latency from the source's commit to the receiver's arrival."""
    ns = f"bench.floor.{uuid.uuid4().hex[:8]}."
    topics = [f"{ns}{name}" for name in ("received", "scored", "assigned")]
    create_topics(bootstrap, topics, 3)
    where = ["--bootstrap", bootstrap, "--durable", str(folder / ns.strip("."))]
    common = [*where, "--n", str(n + WARM)]
    stages = [
        Stage("forward", *common, "--in", topics[0], "--out", topics[1], "--size", str(sizes[1]), "--group", f"{ns}1"),
        Stage("forward", *common, "--in", topics[1], "--out", topics[2], "--size", str(sizes[2]), "--group", f"{ns}2"),
        Stage("webhook", *common, "--in", topics[2], "--url", f"{receiver.url}/hook", "--group", f"{ns}3"),
    ]
    hook = stages[2]
    meter = CpuMeter()
    try:
        for stage in stages:
            stage.wait_ready()
        source = Stage(
            "source",
            *where,
            "--warm",
            str(WARM),
            "--out",
            topics[0],
            "--size",
            str(sizes[0]),
            "--n",
            str(n),
            *("--rate", str(rate)),
        )
        source.wait_ready()  # its warm-up records sent
        warmed = hook.wait_count(WARM, wait_s)
        for name, stage in zip(("hop1", "hop2", "webhook", "source"), [*stages, source], strict=True):
            meter.add(name, stage.process.pid)
        meter.add("broker", broker_pid(bootstrap))
        meter.add("receiver", receiver.process.pid)
        source.go()
        os.waitid(os.P_PID, source.process.pid, os.WEXITED | os.WNOWAIT)  # read its CPU before it is reaped
        meter.sample()
        started = source.finish()["start"]
        complete = hook.wait_count(n + WARM, wait_s)
        cpu_s = meter.stop()
    finally:
        for stage in stages:
            stage.stop()
    received = httpx.get(f"{receiver.url}/_stats", timeout=30).json()["arrivals"]
    measured = {key: t0 for key, (_answered, t0) in hook.arrivals.items() if t0 is not None and key in received}
    last = max((received[key] for key in measured), default=None)
    return {
        "n": n,
        "warmed": warmed,
        "delivered": len(measured),
        "complete": complete,
        "per_s": len(measured) / (last - started) if last else None,
        "latency_ms": summarize([(received[key] - t0) * 1000 for key, t0 in measured.items()]),
        "cpu_s": cpu_s,
        "cpu_ms_per_lead": cpu_per_lead(cpu_s, len(measured)),
    }
