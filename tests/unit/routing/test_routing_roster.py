"""Seed parsing: the documented shape, and errors that name the field."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import pytest

from routing.domain import RosterError, WorkingHours, load_yaml, parse_reps

pytestmark = pytest.mark.unit

SEED = """
teams:
  - id: sales
    name: Account Executives
    method: weighted
    queue_sla_minutes: 30
    timezone: Europe/London
    manager_id: boss
  - {id: sdr}
reps:
  - id: dana
    name: Dana
    email: dana@example.com
    team: sales
    timezone: America/Los_Angeles
    hours: {mon-thu: "08:00-12:00, 13:00-17:00", fri: ["08:00-12:00"], "sat,sun": null}
    closed_on: [2025-12-25]
    languages: [en, es-MX]
    territories: [us-ca, NORAM, NO]
    segments: [Enterprise]
    weight: 3
    max_open: 40
    max_per_day: 15
    status: away
    ooo_from: 2025-08-01T00:00:00Z
    ooo_until: "2025-08-15T00:00:00+02:00"
    manager_id: boss
  - {id: boss, name: Boss, email: boss@example.com, team: sales, hours: always}
  - {id: sam, name: Sam, email: sam@example.com}
"""


def test_seed_shape_parses_into_teams_and_reps() -> None:
    teams, reps = parse_reps(load_yaml(SEED))
    sales, sdr = teams
    assert (sales.name, sales.queue_sla_minutes, sales.timezone, sales.manager_id) == (
        "Account Executives",
        30,
        "Europe/London",
        "boss",
    )
    assert (sdr.name, sdr.method, sdr.queue_sla_minutes) == ("sdr", "weighted", 60)
    dana, boss, sam = reps
    assert dana.hours.by_weekday[0] == [(time(8), time(12)), (time(13), time(17))]
    assert dana.hours.by_weekday[4] == [(time(8), time(12))]
    assert 5 not in dana.hours.by_weekday
    assert dana.hours.closed_dates == frozenset({date(2025, 12, 25)})
    assert dana.languages == frozenset({"en", "es"})
    assert dana.territories == frozenset({"US-CA", "NORAM", "NO"})
    assert dana.segments == frozenset({"enterprise"})
    assert (dana.weight, dana.max_open, dana.max_per_day, dana.status) == (3, 40, 15, "away")
    assert dana.ooo_until == datetime(2025, 8, 14, 22, 0, tzinfo=UTC)
    assert boss.hours == WorkingHours.always()
    assert (sam.team, sam.timezone, sam.hours, sam.weight) == (None, "UTC", WorkingHours(), 1)


def broken(**changes: Any) -> dict[str, Any]:
    base = {"id": "r", "name": "R", "email": "r@example.com"}
    base.update(changes)
    return {"teams": [{"id": "sales"}], "reps": [base]}


@pytest.mark.parametrize(
    ("seed", "error"),
    [
        (broken(timezone="Europe/Londn"), "reps[0].timezone: unknown time zone 'Europe/Londn'"),
        (broken(territories=["UK"]), "reps[0].territories[0]: unknown territory 'UK' (did you mean GB?)"),
        (broken(territories=[False]), "reps[0].territories[0]: expected a string"),
        (broken(status="holiday"), "reps[0].status: unknown status 'holiday'"),
        (broken(weight=0), "reps[0].weight: expected an integer >= 1"),
        (broken(max_open=-1), "reps[0].max_open: expected an integer >= 0"),
        (broken(team="marketing"), "reps[0].team: unknown team 'marketing'"),
        (broken(manager_id="ghost"), "reps[0].manager_id: unknown rep 'ghost'"),
        (broken(email="not-an-email"), "reps[0].email: is not an email address"),
        (broken(name=None), "reps[0].name: is required"),
        (broken(ooo_from="2025-08-01T00:00:00"), "reps[0].ooo_from: datetime needs a UTC offset"),
        (
            broken(ooo_from="2025-08-02T00:00:00Z", ooo_until="2025-08-01T00:00:00Z"),
            "reps[0].ooo_until: must be after",
        ),
        (
            broken(hours={"mon-fri": "17:00-09:00"}),
            "reps[0].hours.mon-fri: span '17:00-09:00' ends before it starts",
        ),
        (broken(hours={"weekdays": "09:00-17:00"}), "reps[0].hours.weekdays: unknown day 'weekdays'"),
        (broken(hours={"mon": "9am-5pm"}), "reps[0].hours.mon: bad time '9am'"),
        (broken(hours={"sat": None}), "reps[0].hours: no working time in the week"),
        (broken(closed_on=["christmas"]), "reps[0].closed_on[0]: bad date 'christmas'"),
        (broken(wieght=2), "reps[0].wieght: unknown field"),
        (
            {"teams": [{"id": "sales", "method": "random"}], "reps": []},
            "teams[0].method: unknown method 'random'",
        ),
        ({"teams": [{"id": "a"}, {"id": "a"}], "reps": []}, "teams[1].id: duplicate id 'a'"),
    ],
)
def test_roster_errors_name_the_field(seed: dict[str, Any], error: str) -> None:
    with pytest.raises(RosterError) as raised:
        parse_reps(seed)
    assert any(message.startswith(error) for message in raised.value.errors), raised.value.errors


def test_midnight_end_and_24_00_mean_end_of_day() -> None:
    _, [night_owl] = parse_reps(broken(hours={"fri": "18:00-24:00"}))
    assert night_owl.hours.by_weekday[4] == [(time(18), time(0))]


def test_accounts_in_the_same_seed_are_left_to_the_caller_but_other_root_keys_are_errors() -> None:
    seed = broken()
    seed["accounts"] = [{"domains": ["acme.io"], "owner": "r"}]
    assert [r.id for r in parse_reps(seed)[1]] == ["r"]
    seed["team"] = []
    with pytest.raises(RosterError, match=r"<root>\.team: unknown field"):
        parse_reps(seed)
