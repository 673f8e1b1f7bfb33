"""Scoring's shape: modules a screen or so long, SQL only in the store, routes on the shared session dependencies."""

from __future__ import annotations

import re
from pathlib import Path

import scoring

PACKAGE = Path(scoring.__file__).parent
MODULES = sorted(path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts)
# Query building and session calls that talk to the database; the store is the one module allowed them.
# (A method of the same name, `self.text(` or `def text(`, is not SQL.)
SQL = re.compile(r"(?<![.\w])(?<!def )(select|insert|update|delete|text)\(|\bsession\.(get|execute|scalars?)\(")


def test_no_scoring_module_is_over_400_lines() -> None:
    long = {path.name: n for path in MODULES if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long


def test_sql_lives_only_in_the_store() -> None:
    outside = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in MODULES
        if path.name != "store.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SQL.search(line)
    ]
    assert not outside


def test_routes_take_their_session_from_the_shared_dependencies() -> None:
    api = (PACKAGE / "api.py").read_text(encoding="utf-8")
    assert "db.transaction()" not in api and "db.read()" not in api
    assert "from scoring.store" not in api  # routes call use cases, never the repository
