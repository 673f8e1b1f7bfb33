"""Session fixtures: the real broker and the real PostgreSQL server, brought up when missing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from common.crypto import DEVELOPMENT_KEY
from tests.support.stack import ROOT, Broker

# The services default to production; every settings object a test builds without naming a mode is a
# development one, said here explicitly (a test of the production default removes this variable).
os.environ["HANDOFF_ENV"] = "development"
# Stored secrets are encrypted under HANDOFF_SECRET_KEY, which production requires: tests, production-mode ones
# included, use the published development key, said here explicitly (the test of a missing key removes it).
os.environ["HANDOFF_SECRET_KEY"] = DEVELOPMENT_KEY

PG_ADMIN_URL = os.environ.get("HANDOFF_TEST_PG_URL", "postgresql://handoff:handoff@127.0.0.1:5432/handoff")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--drill-full", action="store_true", default=False, help="run the long form of the fault drills")


@pytest.fixture(scope="session")
def broker() -> Broker:
    """The shared test broker: reused if one answers already, else started.

    It is left running: concurrent test sessions share it, and `make test` stops it afterwards if it started it.
    """
    port = int(os.environ.get("KAFKA_PORT", "9092"))
    broker = Broker(port=port)
    if not broker.running():
        broker.start()
        broker.owned = True
    return broker


@pytest.fixture(scope="session")
def kafka_bootstrap(broker: Broker) -> str:
    return broker.bootstrap


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """Installs (from Debian's packages) and starts PostgreSQL when it is missing; returns the admin DSN."""
    subprocess.run([ROOT / "scripts/postgres.sh", "ensure"], check=True, capture_output=True)
    return PG_ADMIN_URL


def _fresh_pg_database(admin_url: str) -> tuple[str, str]:
    import asyncio

    import asyncpg

    name = f"handoff_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    base = admin_url.rsplit("/", 1)[0]
    return name, f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)


def _drop_pg_database(admin_url: str, name: str) -> None:
    """Best effort: a database left behind by a failed drop is harmless, and must not fail the test that used it."""
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            for attempt in range(5):
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    return
                except asyncpg.PostgresError:
                    # An autovacuum worker (a superuser process) may be in it; it leaves within moments.
                    await asyncio.sleep(0.2 * (attempt + 1))
            print(f"could not drop test database {name}; leaving it", file=sys.stderr)
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture
def pg_database(postgres_server: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (SQLAlchemy async URL)."""
    name, url = _fresh_pg_database(postgres_server)
    yield url
    _drop_pg_database(postgres_server, name)


@pytest.fixture
def pg_database_factory(postgres_server: str) -> Iterator[callable]:  # type: ignore[valid-type]
    created: list[str] = []

    def make() -> str:
        name, url = _fresh_pg_database(postgres_server)
        created.append(name)
        return url

    yield make
    for name in created:
        _drop_pg_database(postgres_server, name)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Store tests run on both backends."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    else:
        yield request.getfixturevalue("pg_database")


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
async def _noop() -> AsyncIterator[None]:
    yield
