"""`handoff-scoring`: operator commands against the scoring service's own database and settings.

    handoff-scoring load-firmographics companies.csv   # or - for standard input
    handoff-scoring show-ruleset                       # the YAML in force; its version goes to stderr

Both read the same environment as the service (HANDOFF_*, SCORING_DATABASE_URL) and bring the schema to
the newest migration first, so they work on a fresh database too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from common.db import Database
from common.db_schema import upgrade_schema
from scoring.app import MIGRATIONS
from scoring.domain import FirmographicsError, parse_firmographics_csv
from scoring.handlers import Scoring
from scoring.settings import ScoringSettings
from scoring.store import Base

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handoff-scoring", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", help="SQLAlchemy async URL; default: SCORING_DATABASE_URL or the data folder's SQLite file"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser(
        "load-firmographics",
        help="load company facts from CSV (domain,name,employee_band,industry,country,revenue_band)",
    )
    load.add_argument("file", help="the CSV file, or - for standard input")
    commands.add_parser("show-ruleset", help="print the ruleset in force")
    return parser


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    return Path(path).read_text(encoding="utf-8")


async def _load_firmographics(settings: ScoringSettings, url: str, text: str) -> int:
    rows = parse_firmographics_csv(text)
    db = Database(url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        async with db.transaction() as session:
            return await Scoring(settings, provider=None).load_firmographics(session, rows)
    finally:
        await db.dispose()


async def _show_ruleset(settings: ScoringSettings, url: str) -> tuple[str, str]:
    db = Database(url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        async with db.read() as session:
            ruleset = await Scoring(settings, provider=None).active_ruleset(session)
        return ruleset.version, ruleset.source_text
    finally:
        await db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit 0 on success, 1 when the input is invalid (each error names its line), 2 on misuse."""
    args = _parser().parse_args(argv)
    settings = ScoringSettings()
    url = args.database_url or settings.resolved_database_url()
    if args.command == "load-firmographics":
        try:
            text = _read(args.file)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{args.file}: cannot read: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            # Validate before touching the database: a bad file changes nothing.
            parse_firmographics_csv(text)
        except FirmographicsError as exc:
            for line, reason in exc.errors:
                where = f"{args.file}:{line}" if line is not None else args.file
                print(f"{where}: {reason}", file=sys.stderr)
            return EXIT_INVALID
        upgrade_schema(url, MIGRATIONS, Base.metadata)
        count = asyncio.run(_load_firmographics(settings, url, text))
        print(f"loaded {count} companies")
        return EXIT_OK
    upgrade_schema(url, MIGRATIONS, Base.metadata)
    version, text = asyncio.run(_show_ruleset(settings, url))
    print(f"version {version}", file=sys.stderr)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
