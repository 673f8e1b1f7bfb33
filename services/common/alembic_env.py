"""The body of every service's Alembic env.py: online migrations over an async engine."""

from __future__ import annotations

import asyncio
import zlib

from alembic import context
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# One key for every service: services sharing a database serialize their migrations too, which costs nothing.
MIGRATION_LOCK_KEY = zlib.crc32(b"handoff-migrations")


def _run(connection: Connection, metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Processes started together on a fresh database would each create the same tables and all but one
            # fail: the first to get this lock migrates, the others wait for its commit and then find the schema
            # at head. A transaction lock, so it is released with the migration's commit or rollback.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def _run_async(url: str, metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool, hide_parameters=True)
    async with engine.connect() as connection:
        await connection.run_sync(_run, metadata)
        await connection.commit()
    await engine.dispose()


def run_migrations(metadata: MetaData) -> None:
    """Called from env.py; the URL and metadata come from the Config that `upgrade_schema` built."""
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_async(url, metadata))
