"""Small builders shared by the routing domain tests (plain functions, no fixtures)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from routing.domain import Rep, RepLoad, RoutingRules, Team, WorkingHours, load_rules, route

# Wednesday 2025-03-05 15:00 UTC: inside 09-17 in London, 07:00 in Los Angeles, 21:00 in Dhaka.
WED_15_UTC = datetime(2025, 3, 5, 15, 0, tzinfo=UTC)


def rep(rep_id: str, **overrides: Any) -> Rep:
    """A rep who is active, in UTC, works around the clock and fits every lead unless told otherwise."""
    fields: dict[str, Any] = {
        "id": rep_id,
        "name": f"Rep {rep_id}",
        "email": f"{rep_id}@example.com",
        "team": "sales",
        "timezone": "UTC",
        "hours": WorkingHours.always(),
    }
    fields.update(overrides)
    return Rep(**fields)


def view(**parts: Any) -> dict[str, Any]:
    """A qualified grade-A lead view from the US in English; keyword parts replace whole sections."""
    base: dict[str, Any] = {
        "lead": {"country": "US", "region": "CA", "language": "en", "email": "pat@acme.io", "utm": {}},
        "enrichment": {"email_type": "business", "domain": "acme.io", "company": {"employee_band": "51-200"}},
        "score": {"fit": 80, "intent": 70, "grade": "A", "qualified": True},
        "source": {"id": "src-1", "kind": "webhook", "name": "Website"},
        "is_test": False,
        "duplicate_of": None,
    }
    base.update(parts)
    return base


def team_rules(method: str = "weighted", **options: Any) -> RoutingRules:
    """Every lead to team 'sales' by `method`, with the given rule options."""
    rule: dict[str, Any] = {"id": "all", "action": {"team": "sales", "method": method}}
    if options:
        rule["options"] = options
    return load_rules({"fallback_team": "sales", "rules": [rule]})


def decide(
    lead: dict[str, Any],
    reps: list[Rep],
    *,
    rules: RoutingRules | None = None,
    teams: list[Team] | None = None,
    loads: dict[str, RepLoad] | None = None,
    rotation: dict[str, dict[str, int]] | None = None,
    accounts: dict[str, str] | None = None,
    previous_rep: str | None = None,
    exclude: frozenset[str] = frozenset(),
    now: datetime = WED_15_UTC,
):
    """route() with empty defaults for everything the test does not care about."""
    return route(
        lead,
        rules=rules or team_rules(),
        teams=teams if teams is not None else [Team("sales", "Sales"), Team("sdr", "SDR")],
        reps=reps,
        loads=loads or {},
        rotation=rotation or {},
        accounts=accounts or {},
        previous_rep=previous_rep,
        exclude=exclude,
        now=now,
    )
