"""Routing's shape (issue 12): modules a screen or so long, SQL only in the store, routes on the shared session
dependencies and calling use cases, a rep's action in one use-case module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import routing

pytestmark = pytest.mark.unit

PACKAGE = Path(routing.__file__).parent
# The modules this layout covers: the router, its use cases, the store, the entrypoints around them, webhooks.
MODULES = sorted(
    [
        *(PACKAGE / "usecases").glob("*.py"),
        *(PACKAGE / "store").glob("*.py"),
        *(PACKAGE / "webhooks").glob("*.py"),
        *(PACKAGE / name for name in ("handlers.py", "api.py", "consumer.py", "timers.py", "backtest.py", "app.py")),
        PACKAGE / "metrics.py",
    ]
)
# Query building and session calls that talk to the database (a method named so, `def text(`, is not SQL).
SQL = re.compile(r"(?<![.\w])(?<!def )(select|insert|update|delete|text)\(|\bsession\.(get|execute|scalars?|delete)\(")


def test_no_routing_module_is_over_400_lines() -> None:
    long = {path.name: n for path in MODULES if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long


def test_sql_lives_only_in_the_store() -> None:
    outside = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in MODULES
        if path.parent.name != "store" and path.name not in ("store.py", "send_store.py")  # webhooks: its stores
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SQL.search(line)
    ]
    assert not outside


def test_routes_take_their_session_from_the_shared_dependencies_and_call_use_cases() -> None:
    api = (PACKAGE / "api.py").read_text(encoding="utf-8")
    assert "db.transaction()" not in api and "db.read()" not in api
    assert "routing.store" not in api and "RoutingRepository" not in api
    assert "def _error(" not in api  # errors come from common.web.problem


def test_a_reps_action_reads_in_one_use_case_module_on_one_case_load() -> None:
    actions = (PACKAGE / "usecases" / "actions.py").read_text(encoding="utf-8")
    assert "load_case(" in actions and "save_case(" in actions and ".act(" in actions and "publish(" in actions
    assert "pending_timers(" not in actions and "current_assignment(" not in actions
