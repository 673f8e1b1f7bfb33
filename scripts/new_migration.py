"""Autogenerate an Alembic revision for one service: `python scripts/new_migration.py ingest "add x"`."""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

from common.db_schema import upgrade_schema


def main() -> None:
    service, message = sys.argv[1], sys.argv[2]
    store = importlib.import_module(f"{service}.store")
    migrations = Path(importlib.import_module(service).__file__).parent / "migrations"  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/schema.db"
        (migrations / "versions").mkdir(parents=True, exist_ok=True)
        upgrade_schema(url, migrations, store.Base.metadata)
        config = Config()
        config.set_main_option("script_location", str(migrations))
        config.set_main_option("sqlalchemy.url", url)
        config.attributes["target_metadata"] = store.Base.metadata
        command.revision(config, message=message, autogenerate=True)


if __name__ == "__main__":
    main()
