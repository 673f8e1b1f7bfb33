"""The outbox's published rows on their way out: deleted in the next writer's transaction, or by a deleter of their own.

A row the broker has acknowledged is "settling" until its delete commits; the relay reads past settling rows. The
delete rides along in the next transaction that writes events (`add_events` claims the pending seqs, so the
writer's COMMIT covers it: no COMMIT, nor fdatasync, of the relay's own per round); when no writer comes within a
linger, or the relay is stopping, or a batch's worth is waiting, the deleter commits them itself. Exactly the
published seqs, never a range, and only after the broker acknowledged them; a claim whose transaction rolls back
goes back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

import orjson
import structlog
from sqlalchemy import Table, bindparam, delete, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from common.db import Database
from common.poll import sleep_or_wake
from common.sqlprep_session import sqlite_rows

log = structlog.get_logger(__name__)

_DELETE_CHUNK = 5_000  # seqs per DELETE statement (bound parameters stay far below SQLite's and asyncpg's limits)
# How long published rows wait for a writer's transaction to take their delete before the deleter commits its own:
# at a few events a second the next writer comes sooner; idle, one COMMIT per linger at most.
DELETE_LINGER_S = 1.0
# session.info keys: the rows a transaction wrote (handed to the relay at commit) and the deletes it claimed.
HANDED = "common.outbox.handed"
_CLAIMED = "common.outbox.claimed"


class PublishedRows:
    """Published seqs waiting for their delete, and the deleter that commits them when no writer does."""

    def __init__(self, db: Database, table: Table, *, batch: int) -> None:
        self._db = db
        self._table = table
        self._batch = batch
        self.settling: set[int] = set()  # published, not yet deleted (the relay's reads skip them)
        self._to_delete: list[int] = []  # of those, the ones no transaction has taken yet
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._settled = asyncio.Event()  # set whenever nothing is settling
        self._settled.set()
        self._claims = 0  # writers' transactions that took deletes: while they keep coming, the deleter commits none
        # Built once: constructing `seq.in_(list)` per call cost more than running the DELETE of one row.
        self._delete_statement = delete(table).where(table.c.seq.in_(bindparam("seqs", expanding=True)))
        # The table's name comes from the service's own metadata; the seqs are one parameter.
        self._sqlite_delete = f"DELETE FROM {table.name} WHERE seq IN (SELECT value FROM json_each(?))"  # noqa: S608

    @property
    def engine(self) -> AsyncEngine:
        return self._db.engine

    def settle(self, seqs: list[int]) -> None:
        """The broker acknowledged these rows: delete them (soon, and exactly them)."""
        self.settling.update(seqs)
        self._to_delete.extend(seqs)
        self._settled.clear()
        self._wake.set()
        if len(self.settling) >= self._batch:
            self._urgent.set()

    def hurry(self) -> None:
        """Delete what is waiting now (the relay stops, or reads are held up by settling rows)."""
        self._urgent.set()
        self._wake.set()

    async def wait_settled(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._settled.wait()

    async def claim_into(self, session: AsyncSession) -> None:
        """Delete the waiting seqs in the caller's transaction (a writer's, about to commit anyway)."""
        if not self._to_delete or _CLAIMED in session.info:
            return
        seqs, self._to_delete = self._to_delete, []
        session.info[_CLAIMED] = (self, seqs)
        self._claims += 1
        await self._delete(session, seqs)

    def _confirm(self, seqs: list[int]) -> None:
        self.settling.difference_update(seqs)
        if not self.settling:
            self._settled.set()

    def _unclaim(self, seqs: list[int]) -> None:
        self._to_delete[:0] = seqs
        self._wake.set()

    async def _delete(self, session: AsyncSession, seqs: list[int]) -> None:
        # Exactly the published seqs, never a range: on PostgreSQL a seq taken before a read but committed after
        # it lies inside the range, and would be deleted without ever being published.
        # On SQLite one statement at the driver, the seqs as one JSON array: Core's expanding IN rendered a
        # parameter per seq on every call, which cost more than SQLite's deletes (a poll's profile).
        if await sqlite_rows(session, self._sqlite_delete, [orjson.dumps(seqs).decode()]) is not None:
            return
        for start in range(0, len(seqs), _DELETE_CHUNK):
            await session.execute(self._delete_statement, {"seqs": seqs[start : start + _DELETE_CHUNK]})

    async def run(self) -> None:
        """Commit the deletes no writer took within the linger, as many rounds' worth per transaction as waited."""
        backoff = 0.5
        if self._to_delete:
            self._wake.set()  # left by an earlier run whose last delete failed
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._to_delete:
                continue
            # A writer's transaction may take them meanwhile. One that did within the linger will most likely take
            # what was published since, too: linger again (a COMMIT and fsync of the deleter's own a linger saved).
            while not self._urgent.is_set():
                claims = self._claims
                if await sleep_or_wake(self._urgent, DELETE_LINGER_S) or claims == self._claims or not self._to_delete:
                    break
            self._urgent.clear()
            done, self._to_delete = self._to_delete, []
            if not done:
                continue
            try:
                async with self._db.transaction() as session:
                    await self._delete(session, done)
            except Exception as exc:
                # The store is away: the rows stay settling (not read again) and the delete is retried.
                log.warning("outbox_delete_failed", error=type(exc).__name__, retry_in_s=backoff)
                self._to_delete[:0] = done
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self.hurry()
                continue
            backoff = 0.5
            self._confirm(done)


# The relay of each (engine, outbox table) in this process, for add_events to hand rows to and claim deletes from.
_RELAYS: weakref.WeakValueDictionary[tuple[int, str], Any] = weakref.WeakValueDictionary()


def register(relay: Any, engine: AsyncEngine, table: Table) -> None:
    _RELAYS[(id(engine.sync_engine), table.name)] = relay


def relay_for(session: AsyncSession, table: Table) -> Any:
    """The relay publishing `table` for the session's own engine in this process, if any."""
    bind = session.sync_session.bind  # a plain attribute (AsyncSession.bind translates it on every access)
    relay = _RELAYS.get((id(bind), table.name))
    if relay is None or relay.engine.sync_engine is not bind:
        return None
    return relay


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    claimed = session.info.pop(_CLAIMED, None)
    if claimed is not None:
        claimed[0]._confirm(claimed[1])
    handed = session.info.pop(HANDED, None)
    if handed is not None:
        try:
            handed[0].handoff(handed[1])
        except Exception:  # the rows are committed: the relay's table read publishes them anyway
            log.exception("outbox_handoff_failed")


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return  # a savepoint: the outer transaction decides
    # Still here after the end of the outermost transaction: it did not commit.
    claimed = session.info.pop(_CLAIMED, None)
    if claimed is not None:
        claimed[0]._unclaim(claimed[1])
    session.info.pop(HANDED, None)
