"""Ingest's shape (issue 12): modules a screen or so long, SQL only in the store, routes on the shared session
dependencies and calling use cases, and each platform's facts in its own module of the registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ingest

pytestmark = pytest.mark.unit

PACKAGE = Path(ingest.__file__).parent
MODULES = sorted(path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts)
# Query building and session calls that talk to the database (a method named so, `def text(`, is not SQL).
SQL = re.compile(r"(?<![.\w])(?<!def )(select|insert|update|delete|text)\(|\bsession\.(get|execute|scalars?|delete)\(")
# Where a route keeps a session of its own, each with its reason in a comment next to it: the POST /v1/leads hot
# path (the group-commit writer stores the lead; auth and the key check read on their own, a honeypot hit must be
# answered even when the store fails) and the webhook POST (a transaction retried on a concurrent redelivery).
OWN_SESSIONS = {"leads.py", "browser.py", "webhooks.py"}


def test_no_ingest_module_is_over_400_lines() -> None:
    long = {str(path.relative_to(PACKAGE)): n for path in MODULES if (n := len(path.read_text().splitlines())) > 400}
    assert not long


def test_sql_lives_only_in_the_store() -> None:
    outside = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in MODULES
        if path.parent.name != "store"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SQL.search(line)
    ]
    assert not outside


def test_routes_take_their_session_from_the_shared_dependencies_and_call_use_cases() -> None:
    for path in (PACKAGE / "api").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "ingest.store" not in source and "Repository" not in source, path.name
        assert "def _error(" not in source, path.name  # errors come from common.web.problem
        if path.name not in OWN_SESSIONS:
            assert "db.transaction()" not in source and "db.read()" not in source, path.name


def test_platform_knowledge_lives_in_the_platform_modules() -> None:
    # Outside domain/sources no module names a platform's settings or headers: they come from the registry.
    for path in MODULES:
        if "sources" in path.parts or path.name == "clients.py":
            continue
        source = path.read_text(encoding="utf-8")
        for fact in ('"app_secret"', '"google_key"', '"graph_base_url"', "X-Hub-Signature-256", '"meta": 1024'):
            assert fact not in source, (path.relative_to(PACKAGE), fact)
