"""The sqlite3 connection under a session's transaction, asked of SQLAlchemy once per transaction.

On common.db's inline SQLite dialect, scoring's hot statements go to the driver (common.sqlprep). Reaching it
through the AsyncSession (`connection()`, then `get_raw_connection()`) is two greenlet switches, ~45 us each time
under load: a poll of one lead asked twice. The answer is kept in the session's `info` with the transaction it
belongs to, so a later transaction of the same session asks again.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from common.sqlprep import is_inline_sqlite

_KEY = "scoring_driver"


async def inline_sqlite(session: AsyncSession) -> Connection | None:
    """The session's (sync) Connection when it runs on the inline SQLite dialect, whose statements common.sqlprep
    runs at the driver with no greenlet switch; None on any other dialect."""
    transaction = session.sync_session.get_transaction()
    found = session.info.get(_KEY)
    if found is not None and transaction is not None and found[0] is transaction:
        return found[1]
    connection = await session.connection()
    sync = connection.sync_connection if is_inline_sqlite(connection.dialect) else None
    session.info[_KEY] = (session.sync_session.get_transaction(), sync)
    return sync
