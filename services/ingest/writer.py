"""Group commit for web leads: many requests' leads stored in one transaction, each answered after that commit.

Requests normalize their lead outside any lock and hand it to `IngestWriter.submit`, which waits for the answer.
One writer task takes whatever is pending (up to `max_batch`), stores it with `handlers.accept_leads` in one
transaction and resolves every waiter only once that transaction has committed. While it commits, the next batch
gathers, and the writer takes it after a few more turns of the loop while leads keep arriving (the answered
requests' next leads), so batches grow with load and a lone request waits one turn.

Failures: a transient store error (locked, disconnected, read-only) fails every waiter of the batch, which the API
answers with 503, nothing kept. Any other error (a constraint, a bad value) might belong to a single lead, so the
batch is retried one lead per transaction and only the lead that fails again is refused.

On SQLite a batch is a transaction at the driver on a connection the writer keeps (ingest.store.batch_sqlite: no
ORM session per batch); elsewhere a session of the database's.

Overload: the queue is bounded (`writer_max_pending`), and a request waits at most `writer_enqueue_timeout_s` for
room in it before it is refused with `WriterBusy` (a 503 the caller retries), so a store slower than the offered
load costs bounded latency and bounded memory, never an ever-longer wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError, StatementError

from common.db import Database
from ingest import handlers
from ingest.handlers import IdempotencyConflict, PreparedLead, Stored
from ingest.settings import IngestSettings
from ingest.store.batch_sqlite import SQLiteBatches

log = structlog.get_logger(__name__)

_Waiter = tuple[PreparedLead, "asyncio.Future[Stored]"]

# Turns of the event loop a batch waits for more leads while they keep coming (see IngestWriter._gather).
_GATHER_TURNS = 4


class WriterUnavailable(Exception):
    """The writer is not running (not started, or shutting down): nothing was stored."""


class WriterBusy(Exception):
    """The queue stayed full for the whole enqueue wait: nothing was stored, the caller may retry later."""


def _is_item_error(exc: BaseException) -> bool:
    """An error that may come from one lead's data rather than from the store as a whole."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    if isinstance(exc, SQLAlchemyError | OSError):
        # StatementError wraps a value that failed to bind; its DBAPI subclasses are store-wide unless listed above.
        return type(exc) is StatementError
    return isinstance(exc, Exception)


class IngestWriter:
    """Queues prepared leads and stores them in batches, one transaction per batch."""

    def __init__(self, db: Database, settings: IngestSettings) -> None:
        self._db = db
        self._settings = settings
        self._max_batch = settings.writer_max_batch
        self._queue: asyncio.Queue[_Waiter] = asyncio.Queue(maxsize=settings.writer_max_pending)
        self._enqueue_timeout_s = settings.writer_enqueue_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._batches = SQLiteBatches(db) if SQLiteBatches.fits(db) else None

    async def start(self) -> None:
        """Start the writer task."""
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Store what is already queued (within `grace_s`), then stop; anything left is refused, never dropped."""
        self._accepting = False
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            _fail(future, WriterUnavailable("ingest is shutting down"))
        if self._batches is not None:
            await self._batches.close()

    async def submit(self, item: PreparedLead) -> Stored:
        """Store one lead; returns after its transaction committed; raises IdempotencyConflict, WriterBusy or a
        store error."""
        if not self._accepting:
            raise WriterUnavailable("the ingest writer is not running")
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            try:
                # A put that times out is cancelled before it takes a slot: the lead is then not queued at all.
                await asyncio.wait_for(self._queue.put((item, future)), self._enqueue_timeout_s)
            except TimeoutError:
                raise WriterBusy(f"the writer queue stayed full for {self._enqueue_timeout_s} s") from None
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            try:
                await self._gather(batch)
                await self._write(batch)
            except asyncio.CancelledError:
                for _, future in batch:
                    _fail(future, WriterUnavailable("ingest is shutting down"))
                raise
            except Exception as exc:  # the writer must outlive any one batch
                log.exception("ingest_writer_failed", error=type(exc).__name__)
                for _, future in batch:
                    _fail(future, exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _gather(self, batch: list[_Waiter]) -> None:
        """Add what is pending to `batch` (up to `max_batch`), and again after each turn of the loop while leads
        keep arriving, at most `_GATHER_TURNS` turns: the requests whose answers the last commit released post their
        next leads within a turn or two (read, prepared and queued on this loop), and a batch that waits for them is
        half again as large under load (15 -> 23 leads at 32 connections), so the per-batch costs (BEGIN/COMMIT, the
        commit thread's WAL write, the relay's produce request) are shared by more leads. A lone lead waits one turn."""
        queue = self._queue
        for turn in range(_GATHER_TURNS + 1):
            while len(batch) < self._max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            if turn == _GATHER_TURNS or len(batch) >= self._max_batch:
                return
            await asyncio.sleep(0)
            if queue.empty():
                return

    async def _write(self, batch: Sequence[_Waiter]) -> None:
        # A request that gave up (client gone) has no answer to wait for: storing it would only make its retry a
        # second lead.
        live = [(item, future) for item, future in batch if not future.done()]
        if not live:
            return
        try:
            outcomes = await self._commit([item for item, _ in live])
        except Exception as exc:
            if len(live) > 1 and _is_item_error(exc):
                log.warning("ingest_batch_retried_one_by_one", size=len(live), error=type(exc).__name__)
                for waiter in live:
                    await self._write_one(waiter)
                return
            if not _is_item_error(exc):
                log.error("ingest_store_failed", size=len(live), error=type(exc).__name__)
            for _, future in live:
                _fail(future, exc)
            return
        for (_, future), outcome in zip(live, outcomes, strict=True):
            _resolve(future, outcome)

    async def _write_one(self, waiter: _Waiter) -> None:
        item, future = waiter
        for attempt in range(3):
            try:
                (outcome,) = await self._commit([item])
            except IntegrityError as exc:
                # Another process committed the same Idempotency-Key first: the next attempt replays its answer.
                if attempt == 2:
                    _fail(future, exc)
            except Exception as exc:
                _fail(future, exc)
                return
            else:
                _resolve(future, outcome)
                return

    async def _commit(self, items: list[PreparedLead]) -> list[Stored | IdempotencyConflict]:
        if self._batches is not None:
            async with self._batches.transaction() as batch:
                return await handlers.accept_batch(batch, self._settings, items)
        async with self._db.transaction() as session:
            return await handlers.accept_leads(session, self._settings, items)


def _resolve(future: asyncio.Future[Stored], outcome: Stored | IdempotencyConflict) -> None:
    if future.done():
        return
    if isinstance(outcome, IdempotencyConflict):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _fail(future: asyncio.Future[Stored], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
