"""The ops package keeps its rooms: SQL only in queries, and the webhook tables read through their models."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import routing.ops

pytestmark = pytest.mark.unit

PACKAGE = Path(routing.ops.__file__).parent
# Building or sending a statement, or reading the schema: what only the queries module may do.
SQL_NAMES = {"select", "insert", "update", "delete", "text", "table", "column", "inspect", "exists"}
SQL_CALLS = {"execute", "scalar", "scalars", "run_sync"}


def _sql_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found += [f"import {a.name}" for a in node.names if a.name in SQL_NAMES]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
            found.append(f".{node.func.attr}()")
    return found


def test_only_the_queries_module_builds_or_sends_sql() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert "queries.py" in modules and len(modules) > 1
    offenders = {p.name: _sql_uses(p) for p in PACKAGE.glob("*.py") if p.name != "queries.py"}
    assert {name: uses for name, uses in offenders.items() if uses} == {}


def test_the_webhook_tables_are_read_through_their_models_not_the_live_schema() -> None:
    tree = ast.parse((PACKAGE / "queries.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"WebhookDelivery", "WebhookEndpoint"} <= imported
    assert not imported & {"inspect", "table", "column"}
