"""Database setup: one async engine per service, transactions owned by the entrypoint, Alembic migrations."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

# Stable constraint names, so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


class Database:
    """The engine and session factory of one service, built in the lifespan and disposed on shutdown."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            _ensure_sqlite_folder(url)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True, pool_recycle=1800)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self.read_engine = self.engine
        if self.is_sqlite:
            _configure_sqlite(self.engine, sqlite_synchronous, begin="BEGIN IMMEDIATE")
            # Readers get their own engine with deferred transactions: on WAL they never wait for the writer.
            self.read_engine = create_async_engine(url, **kwargs)
            _configure_sqlite(self.read_engine, sqlite_synchronous, begin="BEGIN")
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self.read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False, autoflush=False)
        # SQLite has one writer at a time; queueing writers here keeps them off SQLite's sleeping busy handler.
        self._sqlite_writer = asyncio.Lock() if self.is_sqlite else None
        self._after_commit: list[Callable[[AsyncSession], None]] = []

    def on_commit(self, callback: Callable[[AsyncSession], None]) -> None:
        """Run `callback(session)` after each successful commit (the outbox relay uses it as a wake-up)."""
        self._after_commit.append(callback)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block ends, rolls back if it raises."""
        lock = self._sqlite_writer or contextlib.nullcontext()
        async with lock, self.sessions() as session:
            async with session.begin():
                yield session
            for callback in self._after_commit:
                callback(session)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only session; on SQLite's WAL it never waits for the writer."""
        async with self.read_sessions() as session:
            yield session

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.read_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def _ensure_sqlite_folder(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: AsyncEngine, synchronous: str, *, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # For writers, IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes can
        # fail with SQLITE_BUSY_SNAPSHOT instead of waiting when another connection committed in between.
        conn.exec_driver_sql(begin)


def upgrade_schema(url: str, script_location: str | Path, metadata: MetaData) -> None:
    """Bring the schema to the newest Alembic revision (synchronous: run it in a thread from async code)."""
    from alembic import command
    from alembic.config import Config

    _ensure_sqlite_folder(url)
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["target_metadata"] = metadata
    command.upgrade(config, "head")


async def upgrade_schema_async(url: str, script_location: str | Path, metadata: MetaData) -> None:
    await asyncio.to_thread(upgrade_schema, url, script_location, metadata)
