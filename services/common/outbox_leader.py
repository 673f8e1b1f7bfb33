"""Which relay publishes: on PostgreSQL one process per service holds an advisory lock and LISTENs for commits."""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database

log = structlog.get_logger(__name__)

# A leader checks that its lock's connection still answers at most this often (a round trip per publishing round
# cost more than the round itself); a lock lost in between means another leader may publish the same rows: at least
# once, consumers dedupe.
_CHECK_EVERY_S = 1.0


def relay_channel(service_name: str) -> str:
    """The LISTEN/NOTIFY channel that wakes a service's relay."""
    return f"handoff_outbox_{service_name}"


class RelayLeadership:
    """On PostgreSQL only one relay per service publishes at a time, which keeps each lead's events in order."""

    def __init__(
        self,
        db: Database,
        name: str,
        wake: asyncio.Event,
        token: str = "",
        on_foreign: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._key = zlib.crc32(f"handoff-outbox-{name}".encode())
        self._conn: AsyncConnection | None = None
        self._channel = relay_channel(name)
        self._wake = wake
        self._token = token  # the NOTIFY payload of this relay's own writers (their rows are handed over in memory)
        self._on_foreign = on_foreign  # called for a commit whose rows only the table has
        self._listening: Any = None  # the asyncpg connection the leader LISTENs on
        self._checked = 0.0  # when the held lock's connection last answered
        self._announced = False  # newly_leading() has told the relay about the current leadership

    @property
    def leading(self) -> bool:
        return self._db.is_sqlite or self._conn is not None

    def newly_leading(self) -> bool:
        """True once after each acquisition of the leadership (the first call included)."""
        fresh, self._announced = not self._announced, True
        return fresh

    def _notified(self, _connection: object, _pid: object, _channel: object, payload: object) -> None:
        if (not self._token or payload != self._token) and self._on_foreign is not None:
            self._on_foreign()
        self._wake.set()

    async def acquire(self) -> bool:
        if self._db.is_sqlite:
            return True
        if self._conn is not None:
            if time.monotonic() - self._checked < _CHECK_EVERY_S:
                return True
            try:
                await self._conn.execute(text("SELECT 1"))
                await self._conn.commit()
                self._checked = time.monotonic()
                return True
            except Exception:
                # The server went away, and the lock with it: contend again.
                await self.release()
        conn = await self._db.engine.connect()
        got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})).scalar_one()
        await conn.commit()
        if got:
            self._checked, self._announced = time.monotonic(), False
            self._conn = conn  # held for the process' lifetime; a killed process releases it with its connection
            # Every writer's commit (in any process of the service) NOTIFYs: the leader wakes on it, no polling.
            driver: Any = (await conn.get_raw_connection()).driver_connection
            if hasattr(driver, "add_listener"):
                await driver.add_listener(self._channel, self._notified)
                self._listening = driver
            log.info("outbox_relay_leader")
            return True
        await conn.close()
        return False

    async def release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        listening, self._listening = self._listening, None
        try:
            if listening is not None:
                await listening.remove_listener(self._channel, self._notified)  # the connection goes back to the pool
            # close() only hands the connection back to the pool, and a session-level lock stays with it:
            # unlock explicitly, or the next relay in this process could find the lock taken by nobody.
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            await conn.commit()
            await conn.close()
        except Exception:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # drop the server session itself, which releases the lock
                await conn.close()
