"""What reaches a log line or a dead-letter header about a failed statement: never the values it was given."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path

import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from common.db import Database
from common.db_errors import describe_db_error
from common.logging import configure_logging, describe_error, format_exception_safely

CANARY = "Canarina Vogelsang"


def _store_error(tmp_path: Path) -> BaseException:
    """A real constraint failure on the service's own engine, with a name among the statement's parameters."""

    async def run() -> BaseException:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
        try:
            async with db.transaction() as session:
                await session.execute(text("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"))
            try:
                async with db.transaction() as session:
                    await session.execute(text("INSERT INTO people (id, name) VALUES (1, :n)"), {"n": CANARY})
                    await session.execute(text("INSERT INTO people (id, name) VALUES (1, :n)"), {"n": CANARY})
            except IntegrityError as exc:
                return exc
            raise AssertionError("the duplicate insert did not fail")
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_store_errors_never_carry_bound_parameters(tmp_path: Path) -> None:
    exc = _store_error(tmp_path)
    assert CANARY not in str(exc)  # the engine hides parameters
    assert CANARY not in describe_error(exc)
    assert describe_error(exc).startswith("IntegrityError: (sqlite3.IntegrityError) UNIQUE constraint failed")
    assert "INSERT INTO people" in describe_error(exc)


def test_values_quoted_by_the_driver_are_taken_out_and_object_names_kept() -> None:
    orig = sqlite3.DataError(f'invalid input syntax for type integer: "{CANARY}"\nDETAIL: Key (name)=({CANARY})')
    exc = IntegrityError("INSERT INTO people (name) VALUES (?)", (CANARY,), orig)
    assert CANARY in str(exc)  # SQLAlchemy's own text: what used to be logged and dead-lettered
    described = describe_db_error(exc)
    assert CANARY not in described and "[value]" in described
    unique = IntegrityError("INSERT", (CANARY,), sqlite3.IntegrityError('violates unique constraint "uq_people_name"'))
    assert 'constraint "uq_people_name"' in describe_db_error(unique)
    assert CANARY not in format_exception_safely(exc)


def test_log_lines_hide_names_free_text_and_store_errors(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("test", level="DEBUG")
    try:
        log = structlog.get_logger("redaction-test")
        log.info("lead_seen", first_name="Canarina", company=f"{CANARY} GmbH", notes=CANARY, lead_id="l-1")
        orig = sqlite3.IntegrityError(f"NOT NULL constraint failed: people.name ('{CANARY}')")
        try:
            raise IntegrityError("INSERT INTO people (name) VALUES (?)", (CANARY,), orig)
        except IntegrityError:
            log.exception("store_failed")
            logging.getLogger("stdlib").exception("stdlib_store_failed")
        out = capsys.readouterr().out
    finally:
        structlog.reset_defaults()
        root.handlers, root.level = saved
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [line["event"] for line in lines] == ["lead_seen", "store_failed", "stdlib_store_failed"]
    assert CANARY not in out and "Canarina" not in out
    assert lines[0]["company"] == "[redacted]" and lines[0]["lead_id"] == "l-1"
    assert "sqlalchemy.exc.IntegrityError" in lines[1]["exception"]
    assert "NOT NULL constraint failed" in lines[2]["exception"]
