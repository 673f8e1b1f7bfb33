"""Which relay publishes: on PostgreSQL one process per service holds an advisory lock and LISTENs for commits."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database

log = structlog.get_logger(__name__)


def relay_channel(service_name: str) -> str:
    """The LISTEN/NOTIFY channel that wakes a service's relay."""
    return f"handoff_outbox_{service_name}"


class RelayLeadership:
    """On PostgreSQL only one relay per service publishes at a time, which keeps each lead's events in order."""

    def __init__(self, db: Database, name: str, wake: asyncio.Event) -> None:
        self._db = db
        self._key = zlib.crc32(f"handoff-outbox-{name}".encode())
        self._conn: AsyncConnection | None = None
        self._channel = relay_channel(name)
        self._wake = wake
        self._listening: Any = None  # the asyncpg connection the leader LISTENs on

    def _notified(self, *_args: object) -> None:
        self._wake.set()

    async def acquire(self) -> bool:
        if self._db.is_sqlite:
            return True
        if self._conn is not None:
            try:
                await self._conn.execute(text("SELECT 1"))
                await self._conn.commit()
                return True
            except Exception:
                # The server went away, and the lock with it: contend again.
                await self.release()
        conn = await self._db.engine.connect()
        got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})).scalar_one()
        await conn.commit()
        if got:
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
