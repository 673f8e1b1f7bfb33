"""Schemas brought to the newest Alembic revision, and a cheap check that a restarted store is already there."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from pathlib import Path

from sqlalchemy import MetaData
from sqlalchemy.engine import make_url

from common.db import ensure_sqlite_folder


def upgrade_schema(url: str, script_location: str | Path, metadata: MetaData) -> None:
    """Bring the schema to the newest Alembic revision (synchronous: run it in a thread from async code)."""
    from alembic import command
    from alembic.config import Config

    ensure_sqlite_folder(url)
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["target_metadata"] = metadata
    command.upgrade(config, "head")


async def upgrade_schema_async(url: str, script_location: str | Path, metadata: MetaData) -> None:
    # A restart finds the schema at head nearly always: checked in a few ms without Alembic (importing it and
    # loading every revision costs ~0.3 s of CPU before a restarted service is in service). Any doubt: Alembic.
    with contextlib.suppress(Exception):
        head = _head_revision(Path(script_location))
        if head is not None and await _stored_revisions(url) == [head]:
            return
    await asyncio.to_thread(upgrade_schema, url, script_location, metadata)


_REVISION_LINE = re.compile(r"""^(down_revision|revision)\b[^=\n]*=\s*(.+?)\s*$""", re.MULTILINE)


def _head_revision(script_location: Path) -> str | None:
    """The one head revision, read from the version files' `revision` / `down_revision` lines without importing
    them; None unless that is clear (a merge's tuple of parents, an unusual file)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (script_location / "versions").glob("*.py"):
        values = dict(_REVISION_LINE.findall(path.read_text(encoding="utf-8")))
        revision, parent = values.get("revision", ""), values.get("down_revision", "None")
        if not re.fullmatch(r"[\"'][\w-]+[\"']", revision) or not re.fullmatch(r"None|[\"'][\w-]+[\"']", parent):
            return None
        revisions.add(revision[1:-1])
        if parent != "None":
            parents.add(parent[1:-1])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


async def _stored_revisions(url: str) -> list[str]:
    """The revisions in the store's alembic_version table (raises when it has none)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with contextlib.closing(sqlite3.connect(f"file:{parsed.database}?mode=ro", uri=True)) as conn:
            return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    if parsed.get_driver_name() != "asyncpg":
        raise ValueError("checked by Alembic")
    import asyncpg

    conn = await asyncpg.connect(parsed.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        return [row[0] for row in await conn.fetch("SELECT version_num FROM alembic_version")]
    finally:
        await conn.close()
