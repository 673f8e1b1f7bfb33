"""The durable floor's store, writers and relay (see bench/bare/floor.py): one sqlite3 connection, a group commit,
an in-process outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS leads (id TEXT PRIMARY KEY, dedupe_key TEXT UNIQUE, data BLOB NOT NULL)",
    # AUTOINCREMENT: a seq is never reused after the rows above it are deleted, so "published up to seq N" stays
    # true of exactly the rows the relay sent.
    "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, value BLOB NOT NULL)",
)
_INSERT_LEAD = "INSERT INTO leads (id, dedupe_key, data) VALUES (?, ?, ?)"
_INSERT_KEYED = _INSERT_LEAD + " ON CONFLICT (dedupe_key) DO NOTHING"
_STATIC_HEADERS = [
    ("ce_source", b"/bench/floor"),
    ("ce_specversion", b"1.0"),
    ("ce_type", b"lead.received"),
    ("content-type", b"application/json"),
]

Lead = tuple[str, str | None, bytes]  # id, dedupe key (None: no Idempotency-Key), normalized JSON
OutboxRow = tuple[int, str, bytes]  # seq, key (the lead id, also the event id), event data
Stored = tuple[str, bool]  # the lead id answered, and whether this request stored it (False: a repeated key)


class WriterUnavailable(Exception):
    """The writer is not running: nothing was stored."""


# -- the store ----------------------------------------------------------------------------------------------------


class FloorStore:
    """The leads and outbox tables on one sqlite3 connection (one writer: the connection is its lock)."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        for statement in SCHEMA:
            self._conn.execute(statement)
        self.deleted_upto = 0

    def close(self) -> None:
        self._conn.close()

    def pending_outbox(self) -> list[OutboxRow]:
        """Rows committed but not yet deleted (a crash between commit and publish leaves them): published first."""
        return list(self._conn.execute("SELECT seq, key, value FROM outbox ORDER BY seq"))

    def store(self, batch: Sequence[tuple[Lead, bytes]], published_upto: int) -> tuple[list[Stored], list[OutboxRow]]:
        """Each lead with its outbox row (`bytes`: the event data) in one transaction, and the rows published up to
        `published_upto` deleted in it; returns each lead's answer and the outbox rows committed."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._delete_published(published_upto)
            answers: list[Stored] = []
            plain: list[Lead] = []
            events: list[tuple[str, bytes]] = []
            for lead, event in batch:
                if lead[1] is None:
                    plain.append(lead)  # no key, no conflict: inserted together below
                elif conn.execute(_INSERT_KEYED, lead).rowcount == 0:
                    (first,) = conn.execute("SELECT id FROM leads WHERE dedupe_key = ?", (lead[1],)).fetchone()
                    answers.append((first, False))
                    continue
                answers.append((lead[0], True))
                events.append((lead[0], event))
            if plain:
                conn.executemany(_INSERT_LEAD, plain)
            rows: list[OutboxRow] = []
            if events:
                conn.executemany("INSERT INTO outbox (key, value) VALUES (?, ?)", events)
                # One writer, AUTOINCREMENT: the statement's seqs are the last len(events) ones.
                (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
                first_seq = last - len(events) + 1
                rows = [(first_seq + i, key, value) for i, (key, value) in enumerate(events)]
            self._commit()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.deleted_upto = max(self.deleted_upto, published_upto)
        return answers, rows

    def delete_published(self, published_upto: int) -> None:
        """The published rows deleted in a transaction of their own (only when no lead came to carry it)."""
        if published_upto <= self.deleted_upto:
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._delete_published(published_upto)
            self._commit()
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self.deleted_upto = published_upto

    def _delete_published(self, published_upto: int) -> None:
        if published_upto > self.deleted_upto:
            self._conn.execute("DELETE FROM outbox WHERE seq <= ?", (published_upto,))

    def _commit(self) -> None:
        self._conn.execute("COMMIT")


# -- the relay ----------------------------------------------------------------------------------------------------


class Producer(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]: ...


class Relay:
    """Publishes committed outbox rows in seq order, a round at a time: every row sent, then all awaited."""

    def __init__(
        self, producer: Producer, topic: str, start: Callable[[], Any] | None = None, *, batched: bool = False
    ) -> None:
        self._producer = producer
        self.batched = batched
        self._partitions: list[int] | None = None
        self._topic = topic
        self._start = start
        self._rows: list[OutboxRow] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.published = 0  # every row up to this seq is acknowledged by the broker

    def add(self, rows: Sequence[OutboxRow]) -> None:
        if rows:
            self._rows.extend(rows)
            self._idle.clear()
            self._wake.set()

    async def run(self, send_timeout_s: float = 30.0) -> None:
        while True:
            try:
                # The broker may be down at start: leads are still accepted, events wait in the outbox.
                if self._start is not None:
                    await self._start()
                    self._start = None
                await self._wake.wait()
                self._wake.clear()
                rows, self._rows = self._rows, []
                if not rows:
                    self._idle.set()
                    continue
                try:
                    async with asyncio.timeout(send_timeout_s):
                        await asyncio.gather(*await (self._batched(rows) if self.batched else self._each(rows)))
                except BaseException:
                    # The whole round goes again, in order (a row the broker did take comes twice: consumers dedupe).
                    self._rows[:0] = rows
                    raise
                self.published = rows[-1][0]
                if not self._rows:
                    self._idle.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _each(self, rows: Sequence[OutboxRow]) -> list[asyncio.Future[Any]]:
        """send() each row: aiokafka appends it to its partition's batch without yielding, so the round still leaves
        in one request per broker."""
        futures = []
        for _, key, value in rows:
            event_id = key.encode()
            headers = [("ce_id", event_id), *_STATIC_HEADERS]
            futures.append(await self._producer.send(self._topic, value, key=event_id, headers=headers))
        return futures

    async def _batched(self, rows: Sequence[OutboxRow]) -> list[asyncio.Future[Any]]:
        """One BatchBuilder per partition (the partition send() would choose): one delivery future per partition
        instead of one per row, and none of send()'s per-record checks."""
        producer: Any = self._producer
        if self._partitions is None:
            self._partitions = sorted(await producer.partitions_for(self._topic))
        partitions = self._partitions
        choose = producer._partitioner
        open_batches: dict[int, Any] = {}
        full: list[tuple[int, Any]] = []
        for _, key, value in rows:
            event_id = key.encode()
            headers = [("ce_id", event_id), *_STATIC_HEADERS]
            partition = choose(event_id, partitions, partitions)
            batch = open_batches.get(partition)
            if batch is None or batch.append(timestamp=None, key=event_id, value=value, headers=headers) is None:
                if batch is not None:
                    full.append((partition, batch))
                batch = open_batches[partition] = producer.create_batch()
                batch.append(timestamp=None, key=event_id, value=value, headers=headers)
        return [
            await producer.send_batch(batch, self._topic, partition=partition)
            for partition, batch in [*full, *open_batches.items()]
        ]

    async def drain(self, within_s: float) -> None:
        """Wait until every row handed over is published (bounded: shutdown must not hang on a broker)."""
        if not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), within_s)


# -- the writers --------------------------------------------------------------------------------------------------

_Waiter = tuple[Lead, bytes, "asyncio.Future[Stored]"]


class ThreadWriter:
    """sqlite3 in a thread of its own: the loop parses the next requests while a commit waits for its fsync.

    A request puts its lead on a queue and awaits a future; the thread takes everything waiting (up to `max_batch`),
    stores it in one transaction and resolves the batch's futures on the loop, once, after the commit."""

    def __init__(self, store: FloorStore, relay: Relay, max_batch: int) -> None:
        self._store = store
        self._relay = relay
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Waiter | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="floor-writer", daemon=True)
        self._thread.start()

    async def submit(self, lead: Lead, event: bytes) -> Stored:
        if self._loop is None:
            raise WriterUnavailable("the writer is not running")
        future: asyncio.Future[Stored] = self._loop.create_future()
        self._queue.put((lead, event, future))
        return await future

    async def stop(self) -> None:
        """Store everything queued before the stop, then end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(thread.join)
        self._loop = None

    def _run(self) -> None:
        assert self._loop is not None
        loop = self._loop
        while True:
            try:
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                with contextlib.suppress(sqlite3.Error):
                    self._store.delete_published(self._relay.published)
                continue
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                answers, rows = self._store.store([(lead, event) for lead, event, _ in batch], self._relay.published)
            except Exception as exc:
                loop.call_soon_threadsafe(_fail, batch, exc)
            else:
                loop.call_soon_threadsafe(_done, batch, answers, rows, self._relay)
            if stop:
                return


class LoopWriter:
    """sqlite3 on the event loop: the requests that arrive in one loop turn are stored in one transaction at its
    end, and the loop waits for the commit's fsync (no thread hand-over to pay for)."""

    def __init__(self, store: FloorStore, relay: Relay, max_batch: int) -> None:
        self._store = store
        self._relay = relay
        self._max_batch = max_batch
        self._pending: list[_Waiter] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tidy: asyncio.TimerHandle | None = None
        self._wrote = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tidy = self._loop.call_later(1.0, self._delete_when_idle)

    async def submit(self, lead: Lead, event: bytes) -> Stored:
        if self._loop is None:
            raise WriterUnavailable("the writer is not running")
        future: asyncio.Future[Stored] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append((lead, event, future))
        return await future

    async def stop(self) -> None:
        if self._pending:
            self._flush()
        if self._tidy is not None:
            self._tidy.cancel()
        self._loop = None

    def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                answers, rows = self._store.store([(lead, event) for lead, event, _ in batch], self._relay.published)
            except Exception as exc:
                _fail(batch, exc)
            else:
                _done(batch, answers, rows, self._relay)
        self._wrote = True

    def _delete_when_idle(self) -> None:
        if not self._wrote:
            with contextlib.suppress(sqlite3.Error):
                self._store.delete_published(self._relay.published)
        self._wrote = False
        if self._loop is not None:
            self._tidy = self._loop.call_later(1.0, self._delete_when_idle)


def _done(batch: Sequence[_Waiter], answers: Sequence[Stored], rows: Sequence[OutboxRow], relay: Relay) -> None:
    relay.add(rows)
    for (_, _, future), answer in zip(batch, answers, strict=True):
        if not future.done():
            future.set_result(answer)


def _fail(batch: Sequence[_Waiter], exc: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(exc)
