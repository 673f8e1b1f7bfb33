"""What every routing repository holds: the caller's session (the entrypoint owns its transaction)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from common.sqlprep_session import session_driver

_T = TypeVar("_T")


class Repository:
    """Repositories add, flush and query; they never commit."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _on_postgres(self) -> bool:
        bind = self.session.bind
        return bind is not None and bind.dialect.name == "postgresql"

    async def _on_connection(self, work: Callable[[Connection], _T]) -> _T:
        """`work(connection)` on the session's connection, in its transaction. On the inline SQLite dialect it is
        called right here: its statements are sqlite3 calls on the loop's thread, so the greenlet switch and the
        session's connection look-up of run_sync (~10-15 us each, three times a routing poll) buy nothing; the
        connection is asked of SQLAlchemy once per transaction (common.sqlprep_session). Elsewhere run_sync's."""
        connection, _dialect, raw = await session_driver(self.session)
        if raw is not None:
            sync = connection.sync_connection
            assert sync is not None
            return work(sync)
        return await connection.run_sync(work)
