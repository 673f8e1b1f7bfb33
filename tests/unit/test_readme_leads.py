"""The README's example-lead table holds: each lead, scored by the shipped ruleset and routed by the shipped rules
with the demo roster, gets the grade, qualification, route and SLA its row shows.

The leads live here (what each one submits); the README row of the same name says what happens to it. Scoring runs
its pure path (default enrichment, no firmographics, no provider) and routing its pure decision function, at a fixed
clock inside working hours, so a change to either ruleset that moves one of these leads fails here until the README
says the new truth.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from routing.domain import (
    DEFAULT_RULES_YAML,
    Rep,
    RoutingRules,
    Team,
    load_rules,
    parse_reps,
    queue_policy,
    route,
    sla_policy_for,
)
from scoring.domain import DEFAULT_RULESET_YAML, Ruleset, enrich, load_ruleset, score_lead

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEMO_ROSTER = ROOT / "services" / "routing" / "demo_reps.yaml"
# A Wednesday afternoon in Europe, morning in the Americas: inside anyone's working hours.
NOW = datetime(2026, 3, 4, 14, 30, tzinfo=UTC)
TABLE_START, TABLE_END = "<!-- example-leads:start -->", "<!-- example-leads:end -->"


@dataclass(frozen=True)
class Submission:
    """What one lead sends, as ingest publishes it in lead.received."""

    lead: dict[str, Any]
    source_kind: str = "web"
    is_test: bool = False
    repeat_count: int = 0  # earlier submissions by the same person
    extra: dict[str, Any] = field(default_factory=dict)


LEADS: dict[str, Submission] = {
    "First-time demo request": Submission(
        {
            "first_name": "Raj",
            "last_name": "Patel",
            "email": "raj.patel@initech.io",
            "job_title": "Software Engineer",
            "company": "Initech",
            "country": "US",
            "language": "en",
            "form_id": "demo-request",
            "page_url": "https://handoff.example/demo",
            "message": "Could we see pricing for 30 seats?",
        }
    ),
    "VP on gmail": Submission(
        {
            "first_name": "Maria",
            "last_name": "Lopez",
            "email": "maria.lopez@gmail.com",
            "job_title": "VP Marketing",
            "country": "US",
            "language": "en",
            "form_id": "demo-request",
        }
    ),
    "Student": Submission(
        {
            "first_name": "Kim",
            "last_name": "Nguyen",
            "email": "kim.nguyen@stateu.edu",
            "job_title": "Student",
            "country": "US",
            "form_id": "ebook-speed-to-lead",
            "page_url": "https://handoff.example/resources/speed-to-lead-ebook",
        }
    ),
    "Competitor": Submission(
        {
            "first_name": "Alex",
            "last_name": "Moreau",
            "email": "alex@competitor-one.example",
            "job_title": "Product Manager",
            "country": "US",
            "form_id": "contact-sales",
            "page_url": "https://handoff.example/pricing",
            "message": "What do you charge per seat?",
        }
    ),
    "Meta lead ad": Submission(
        {
            "first_name": "Joana",
            "last_name": "Silva",
            "full_name": "Joana Silva",
            "phone": "+5511987654321",
            "form_id": "1187342298845521",
        },
        source_kind="meta",
    ),
    "German callback": Submission(
        {
            "first_name": "Klaus",
            "last_name": "Weber",
            "email": "k.weber@weber-logistik.de",
            "job_title": "Geschäftsführer",
            "company": "Weber Logistik GmbH",
            "country": "DE",
            "language": "de",
            "form_id": "kontakt",
            "message": "Bitte um Rückruf, wir planen die Umstellung im nächsten Quartal.",
        }
    ),
    "Spanish pricing": Submission(
        {
            "first_name": "Lucía",
            "last_name": "Fernández",
            "email": "lucia.fernandez@transportes-iberia.es",
            "job_title": "Directora de Operaciones",
            "country": "ES",
            "language": "es",
            "form_id": "contacto",
            "message": "¿Nos pueden enviar los precios para 20 usuarios?",
        }
    ),
    "Bengali demo": Submission(
        {
            "first_name": "রহিম",
            "last_name": "উদ্দিন",
            "email": "rahim@dhakatextiles.com.bd",
            "phone": "+8801711234567",
            "country": "BD",
            "language": "bn",
            "form_id": "contact",
            "message": "আমরা একটি ডেমো চাই। দাম কত?",
        }
    ),
    "Newsletter": Submission(
        {
            "email": "tom.baker@brightwave.co.uk",
            "country": "GB",
            "form_id": "newsletter",
            "page_url": "https://handoff.example/blog/speed-to-lead",
        }
    ),
    "Disposable email": Submission(
        {"email": "freeleads@mailinator.com", "form_id": "contact-sales", "message": "pricing?"}
    ),
    "Google Ads test lead": Submission(
        {
            "full_name": "FirstName LastName",
            "email": "test@example.com",
            "phone": "+16505550123",
            "form_id": "google-ads-demo-form",
        },
        source_kind="google_ads",
        is_test=True,
    ),
    "Returning customer": Submission(
        {
            "first_name": "Lee",
            "last_name": "Chang",
            "email": "lee.chang@acme.com",
            "job_title": "Head of Sales Operations",
            "company": "Acme",
            "country": "US",
            "language": "en",
            "form_id": "contact-sales",
            "message": "We want to add 40 seats, can you send a quote?",
        },
        repeat_count=1,
    ),
    "Whitepaper from paid search": Submission(
        {
            "first_name": "Sofia",
            "last_name": "Rossi",
            "email": "sofia.rossi@northwind.com",
            "job_title": "Marketing Manager",
            "country": "US",
            "language": "en",
            "form_id": "whitepaper-lead-response",
            "utm": {"source": "google", "medium": "cpc", "campaign": "whitepaper-q1"},
        }
    ),
}


@dataclass(frozen=True)
class Outcome:
    """What a lead gets, in the README's terms."""

    grade: str
    qualified: bool
    rule_id: str | None
    destination: str  # "nurture", or the team that took it
    rep_id: str | None
    sla_minutes: float | None
    fired: tuple[str, ...]


@cache
def _rulesets() -> tuple[Ruleset, RoutingRules]:
    return load_ruleset(DEFAULT_RULESET_YAML), load_rules(DEFAULT_RULES_YAML)


@cache
def _roster() -> tuple[list[Team], list[Rep], dict[str, str]]:
    data = yaml.safe_load(DEMO_ROSTER.read_text(encoding="utf-8"))
    teams, reps = parse_reps(data)
    accounts = {domain: account["owner"] for account in data["accounts"] for domain in account["domains"]}
    return teams, reps, accounts


def outcome_of(submission: Submission) -> Outcome:
    """Score with the shipped ruleset, route with the shipped rules and the demo roster, pick the SLA."""
    lead = submission.lead
    source = {"id": f"src-{submission.source_kind}", "kind": submission.source_kind, "name": submission.source_kind}
    context = {
        "source": source,
        "is_test": submission.is_test,
        "duplicate_of": None,
        "repeat_count": submission.repeat_count,
    }
    enrichment = enrich(lead, firmographic=None, provider_result=None, provider_status="disabled")
    ruleset, rules = _rulesets()
    score = score_lead(lead, enrichment, ruleset, context=context)
    # The routing view is what routing builds from lead.scored.
    view = {
        "lead": lead,
        "enrichment": enrichment.to_dict(),
        "score": score.to_dict(),
        "source": source,
        "is_test": submission.is_test,
        "duplicate_of": None,
    }
    teams, reps, accounts = _roster()
    decision = route(
        view, rules=rules, teams=teams, reps=reps, loads={}, rotation={}, accounts=accounts, previous_rep=None, now=NOW
    )
    # The clock routing starts: the grade's SLA for an assignment, the team's queue SLA for a queued lead.
    if decision.outcome == "assigned":
        sla: float | None = sla_policy_for(score.grade).minutes
    elif decision.outcome == "queued":
        sla = queue_policy(next(team for team in teams if team.id == decision.team_id)).minutes
    else:
        sla = None
    destination = "nurture" if decision.outcome == "nurture" else str(decision.team_id)
    return Outcome(
        score.grade,
        score.qualified,
        decision.rule_id,
        destination,
        decision.rep_id,
        sla,
        tuple(rule.id for rule in score.fired),
    )


@dataclass(frozen=True)
class Row:
    """One row of the README table, parsed."""

    name: str
    arrives: str
    grade: str
    qualified: bool
    rule_id: str
    destination: str
    rep_id: str | None
    sla_minutes: float | None


_ROUTE = re.compile(r"^`(?P<rule>[\w-]+)` → (?P<dest>[\w-]+)(?: / (?P<rep>\w+))?(?: \(.*\))?$")
_SLA = re.compile(r"^(?P<minutes>\d+) min\b")


def readme_rows() -> list[Row]:
    """The example-lead table between its markers in README.md."""
    text = README.read_text(encoding="utf-8")
    assert TABLE_START in text and TABLE_END in text, "README lost its example-lead table markers"
    table = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    lines = [line.strip() for line in table.strip().splitlines() if line.strip().startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["Lead", "What arrives", "Grade", "Qualified", "Route", "SLA"]
    rows = []
    for line in lines[2:]:
        name, arrives, grade, qualified, route_cell, sla = (cell.strip() for cell in line.strip("|").split("|"))
        match = _ROUTE.match(route_cell)
        assert match, f"README route {route_cell!r} does not read `rule` → team-or-nurture [/ rep] [(why)]"
        minutes = _SLA.match(sla)
        assert minutes or sla == "none", f"README SLA {sla!r} is neither 'N min ...' nor 'none'"
        assert qualified in ("yes", "no"), qualified
        rows.append(
            Row(
                name=name.strip("*"),
                arrives=arrives,
                grade=grade,
                qualified=qualified == "yes",
                rule_id=match["rule"],
                destination=match["dest"],
                rep_id=match["rep"],
                sla_minutes=float(minutes["minutes"]) if minutes else None,
            )
        )
    return rows


def test_the_readme_table_lists_exactly_the_example_leads() -> None:
    assert [row.name for row in readme_rows()] == list(LEADS)


@pytest.mark.parametrize("name", list(LEADS))
def test_each_readme_lead_gets_the_grade_route_and_sla_its_row_shows(name: str) -> None:
    row = next((row for row in readme_rows() if row.name == name), None)
    assert row is not None, f"the README table has no row for {name!r}"
    submission = LEADS[name]
    # What the row says arrives is what the lead sends: every `quoted` value is one of the lead's values.
    sent = json.dumps({**submission.lead, "source": submission.source_kind}, ensure_ascii=False)
    for quoted in re.findall(r"`([^`]+)`", row.arrives):
        assert quoted in sent, f"{row.name}: README says `{quoted}` arrives, the lead does not send it"
    got = outcome_of(submission)
    assert (got.grade, got.qualified) == (row.grade, row.qualified), got.fired
    assert (got.rule_id, got.destination) == (row.rule_id, row.destination)
    if row.rep_id is not None:
        assert got.rep_id == row.rep_id
    assert got.sla_minutes == row.sla_minutes


@pytest.mark.parametrize(
    "name",
    [
        "First-time demo request",
        "VP on gmail",
        "German callback",
        "Spanish pricing",
        "Bengali demo",
        "Returning customer",
    ],
)
def test_hand_raisers_get_the_five_minute_clock_and_show_why(name: str) -> None:
    got = outcome_of(LEADS[name])
    assert "hand_raise" in got.fired
    assert (got.grade, got.qualified, got.sla_minutes) == ("A", True, 5)
    assert got.destination == "sales"  # account executives, not the SDR round robin


@pytest.mark.parametrize("name", ["Competitor", "Disposable email"])
def test_a_hand_raise_from_someone_we_keep_out_still_goes_to_nurture(name: str) -> None:
    got = outcome_of(LEADS[name])
    assert "hand_raise" in got.fired  # the ask is visible in the reasons ...
    assert (got.qualified, got.destination, got.sla_minutes) == (False, "nurture", None)  # ... but no hot path
    assert got.grade != "A"
