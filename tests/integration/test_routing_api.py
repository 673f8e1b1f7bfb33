"""Routing's HTTP API in-process (ASGI) on SQLite and PostgreSQL: the roster, accounts, rules, simulate, erasure.

Scored leads are handed to the app's own router in a transaction, exactly as its Kafka consumer does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from common.envelope import Event
from routing.app import create_app
from routing.handlers import Router
from routing.store import AssignmentRow, LeadRow, TimelineRow
from routing.webhooks import normalize_event_types
from tests.support.routing import Clock, scored, service_settings
from tests.support.stack import ADMIN

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

RULES = """
fallback_team: t
rules:
  - id: owners
    action: {account_owner: true}
  - id: everyone
    action: {team: t, method: round_robin}
"""


@dataclass
class RoutingApp:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def router(self) -> Router:
        return self.app.state.router  # type: ignore[no-any-return]

    async def route(self, event: Event) -> dict[str, Any]:
        """Apply lead.scored as the consumer would, then read the lead back through the API."""
        async with self.app.state.runtime.db.transaction() as session:
            await self.router.on_scored(session, event)
        return await self.lead(event.subject)

    async def lead(self, lead_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/leads/{lead_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def router_act(self, lead_id: str, action: str, reason: str | None = None) -> dict[str, Any]:
        async with self.app.state.runtime.db.transaction() as session:
            return await self.router.act(session, lead_id, action, rep_id=None, reason=reason, correlation_id=None)

    async def patch_rep(self, rep_id: str, **changes: Any) -> httpx.Response:
        return await self.client.patch(f"/v1/reps/{rep_id}", json=changes, headers=ADMIN)


@pytest.fixture
async def routing(database_url: str, kafka_bootstrap: str, namespace: str, tmp_path: Path) -> AsyncIterator[RoutingApp]:
    settings = service_settings(
        database_url,
        tmp_path,
        kafka_bootstrap=kafka_bootstrap,
        namespace=namespace,
        rules=RULES,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://routing.test") as client:
            yield RoutingApp(app, client)


def _excluded(assignment: dict[str, Any]) -> dict[str, list[str]]:
    return {c["rep_id"]: c["excluded_because"] for c in assignment["candidates"]}


# -- reps: status, out of office, capacity -------------------------------------------------------------------


async def test_rep_status_out_of_office_and_capacity_set_through_the_api_decide_eligibility(
    routing: RoutingApp,
) -> None:
    now = datetime.now(UTC)
    assert (await routing.patch_rep("r1", status="away")).status_code == 200
    ooo = {"ooo_from": (now - timedelta(hours=1)).isoformat(), "ooo_until": (now + timedelta(days=2)).isoformat()}
    assert (await routing.patch_rep("r2", **ooo)).status_code == 200
    assert (await routing.patch_rep("r3", status="left")).status_code == 200

    first = (await routing.route(scored()))["current_assignment"]
    assert first["outcome"] == "queued" and first["team_id"] == "t" and first["rep_id"] is None
    assert _excluded(first) == {"r1": ["status:away"], "r2": ["out_of_office"], "r3": ["left"]}

    assert (await routing.patch_rep("r3", status="active", max_open=1)).status_code == 200
    second = (await routing.route(scored()))["current_assignment"]
    assert second["rep_id"] == "r3"
    third = (await routing.route(scored()))["current_assignment"]
    assert third["outcome"] == "queued"
    assert _excluded(third)["r3"] == ["over_capacity:open"]
    assert "over_capacity:open" in third["reason"]

    rep = (await routing.client.get("/v1/reps/r3", headers=ADMIN)).json()
    assert rep["max_open"] == 1 and rep["load"]["open_leads"] == 1 and rep["status"] == "active"

    # Back from leave, r1 is eligible again and takes the next lead.
    assert (await routing.patch_rep("r1", status="active")).status_code == 200
    assert (await routing.route(scored()))["current_assignment"]["rep_id"] == "r1"


async def test_rep_changes_that_make_no_sense_are_refused_naming_the_field(routing: RoutingApp) -> None:
    before = (await routing.client.get("/v1/reps/r1", headers=ADMIN)).json()
    bad_status = await routing.patch_rep("r1", status="holiday")
    assert bad_status.status_code == 422
    assert bad_status.json()["error"] == "invalid_roster"
    assert [e["path"] for e in bad_status.json()["detail"]] == ["status"]

    typo = await routing.patch_rep("r1", wieght=2)
    assert typo.status_code == 422 and typo.json()["detail"] == [{"path": "wieght", "reason": "unknown field"}]

    negative = await routing.patch_rep("r1", max_open=-1)
    assert negative.status_code == 422 and negative.json()["detail"][0]["path"] == "max_open"

    bad_team = await routing.client.put(
        "/v1/reps/r9", json={"name": "New", "email": "new@example.com", "team": "nope"}, headers=ADMIN
    )
    assert bad_team.status_code == 422 and bad_team.json()["detail"][0]["path"] == "team"

    assert (await routing.patch_rep("nobody", status="away")).status_code == 404
    assert (await routing.client.get("/v1/reps/r1", headers=ADMIN)).json() == before


async def test_a_new_rep_put_through_the_api_joins_the_rotation(routing: RoutingApp) -> None:
    created = await routing.client.put(
        "/v1/reps/r4",
        json={"name": "Rep Four", "email": "r4@example.com", "team": "t", "hours": "always"},
        headers=ADMIN,
    )
    assert created.status_code == 200, created.text
    reps = [(await routing.route(scored()))["current_assignment"]["rep_id"] for _ in range(4)]
    assert sorted(reps) == ["r1", "r2", "r3", "r4"]


# -- repeat leads ---------------------------------------------------------------------------------------------


async def test_a_repeat_after_the_lead_closed_is_a_new_lead_for_the_rep_who_had_it_while_they_are_available(
    routing: RoutingApp,
) -> None:
    original = await routing.route(scored())
    owner = original["current_assignment"]["rep_id"]
    await routing.router_act(original["lead_id"], "convert")  # closed: the next submission is a new lead
    repeat = await routing.route(scored(duplicate_of=original["lead_id"]))
    assert repeat["status"] == "assigned" and repeat["merged_into"] is None and len(repeat["assignments"]) == 1
    current = repeat["current_assignment"]
    assert current["rep_id"] == owner and current["method"] == "previous_rep"
    assert "duplicates one held by" in current["reason"]

    await routing.router_act(repeat["lead_id"], "disqualify", reason="duplicate")
    assert (await routing.patch_rep(owner, status="away")).status_code == 200
    again = (await routing.route(scored(duplicate_of=original["lead_id"])))["current_assignment"]
    assert again["rep_id"] != owner and again["method"] == "round_robin"


async def test_a_repeat_while_the_lead_is_open_is_shown_merged_into_it_and_sales_tools_can_subscribe(
    routing: RoutingApp,
) -> None:
    assert normalize_event_types(["lead.resubmitted"]) == ["lead.resubmitted"]  # a webhook endpoint may ask for it
    original = await routing.route(scored(grade="B"))
    repeat = await routing.route(scored(grade="A", duplicate_of=original["lead_id"], message="demo please"))
    assert (repeat["status"], repeat["merged_into"]) == ("merged", original["lead_id"])
    assert repeat["assignments"] == [] and repeat["current_assignment"] is None
    assert [t["kind"] for t in repeat["timeline"]] == ["merged"]
    joined = await routing.lead(original["lead_id"])
    assert len(joined["assignments"]) == 1 and joined["grade"] == "A"
    (entry,) = [t for t in joined["timeline"] if t["kind"] == "resubmitted"]
    assert entry["detail"]["repeat_lead_id"] == repeat["lead_id"] and entry["detail"]["clock_tightened"] is True
    assert joined["current_assignment"]["sla"]["due_at"] == entry["detail"]["sla_due_at"]


# -- accounts -------------------------------------------------------------------------------------------------


async def test_accounts_through_the_api_send_a_known_company_to_its_owner(routing: RoutingApp) -> None:
    put = await routing.client.put("/v1/accounts/Acme.com", json={"owner": "r3", "name": "Acme"}, headers=ADMIN)
    assert put.status_code == 200 and put.json() == {"domain": "acme.com", "account": "acme.com", "owner": "r3"}
    listed = (await routing.client.get("/v1/accounts", headers=ADMIN)).json()["items"]
    assert {"domain": "acme.com", "account": "acme.com", "owner": "r3", "name": "Acme"} in listed

    by_email = (await routing.route(scored(email="pat@acme.com", enrichment={})))["current_assignment"]
    assert (by_email["rep_id"], by_email["method"], by_email["rule_id"]) == ("r3", "account_owner", "owners")
    by_enrichment = (await routing.route(scored(enrichment={"domain": "acme.com"})))["current_assignment"]
    assert by_enrichment["rep_id"] == "r3"
    stranger = (await routing.route(scored(email="sam@elsewhere.io", enrichment={})))["current_assignment"]
    assert stranger["rule_id"] == "everyone" and stranger["method"] == "round_robin"

    unknown = await routing.client.put("/v1/accounts/acme.com", json={"owner": "ghost"}, headers=ADMIN)
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "owner"
    assert (await routing.client.delete("/v1/accounts/acme.com", headers=ADMIN)).status_code == 204
    after = (await routing.route(scored(email="lee@acme.com", enrichment={})))["current_assignment"]
    assert after["rule_id"] == "everyone"


async def test_accounts_imported_from_csv_match_by_subdomain_by_any_of_their_domains_and_by_company_name(
    routing: RoutingApp,
) -> None:
    csv = 'account,name,domains,owner\nacme,"ACME, Inc.",acme.com;acme-corp.de,r3\nglobex,Globex GmbH,globex.co.uk,r2\n'
    imported = await routing.client.post(
        "/v1/accounts/import", content=csv, headers={**ADMIN, "Content-Type": "text/csv"}
    )
    assert imported.status_code == 200 and imported.json() == {"accounts": 2, "domains": 3}

    async def route(**lead: Any) -> dict[str, Any]:
        return (await routing.route(scored(enrichment={}, **lead)))["current_assignment"]

    subdomain = await route(email="jane@uk.acme.com")
    assert (subdomain["rep_id"], subdomain["method"]) == ("r3", "account_owner")
    assert subdomain["match"] == {"account_id": "acme", "owner": "r3", "method": "parent_domain", "value": "acme.com"}
    second_domain = await route(email="kai@acme-corp.de")
    assert second_domain["rep_id"] == "r3" and second_domain["match"]["method"] == "domain"
    by_name = await route(email="vp.sales@gmail.com", company="Acme Inc")
    assert by_name["rep_id"] == "r3"
    assert by_name["match"] == {"account_id": "acme", "owner": "r3", "method": "company_name", "value": "acme"}
    public_suffix_only = await route(email="someone@other.co.uk")  # shares only the public suffix with globex.co.uk
    assert public_suffix_only["rule_id"] == "everyone" and public_suffix_only["match"] is None

    # The owner of one domain of an account changes the owner of the whole account.
    assert (await routing.client.put("/v1/accounts/acme.com", json={"owner": "r1"}, headers=ADMIN)).status_code == 200
    assert (await route(email="kai@acme-corp.de"))["rep_id"] == "r1"

    bad = await routing.client.post(
        "/v1/accounts/import",
        content="account,name,domains,owner\nx,X,,r1\ny,Y,co.uk,ghost\n",
        headers={**ADMIN, "Content-Type": "text/csv"},
    )
    assert bad.status_code == 422
    assert [e["path"] for e in bad.json()["detail"]] == ["line 2", "line 3"]
    ghost = await routing.client.post(
        "/v1/accounts/import",
        content="account,name,domains,owner\ny,Y,initech.com,ghost\n",
        headers={**ADMIN, "Content-Type": "text/csv"},
    )
    assert ghost.status_code == 422 and ghost.json()["detail"][0]["path"] == "account y.owner"
    listed = (await routing.client.get("/v1/accounts", headers=ADMIN)).json()["items"]
    assert "initech.com" not in {a["domain"] for a in listed}


# -- rules ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "path"),
    [
        ("fallback_team: t\nrules:\n  - {id: x, action: {team: nope}}\n", "application/yaml", "rules[0].action.team"),
        (
            "fallback_team: t\nrules:\n  - {when: {scor.grade: A}, action: {team: t}}\n",
            "application/yaml",
            "rules[0].when.scor.grade",
        ),
        (
            json.dumps({"fallback_team": "t", "rules": [{"action": {"team": "t", "method": "random"}}]}),
            "application/json",
            "rules[0].action.method",
        ),
        (json.dumps({"fallback_team": "ghosts", "rules": []}), "application/json", "fallback_team"),
        (
            "fallback_team: t\nrules:\n  - {action: {rep: r1, fallback: {team: t, method: weighted, extra: 1}}}\n",
            "application/yaml",
            "rules[0].action.fallback.extra",
        ),
        ("rules: [", "application/yaml", "<document>"),
    ],
)
async def test_rules_put_refuses_bad_rules_naming_the_path_and_keeps_the_old_ones(
    routing: RoutingApp, body: str, content_type: str, path: str
) -> None:
    before = (await routing.client.get("/v1/routing/rules", headers=ADMIN)).json()
    response = await routing.client.put(
        "/v1/routing/rules", content=body, headers={**ADMIN, "Content-Type": content_type}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_rules"
    assert path in [error["path"] for error in response.json()["detail"]]
    assert (await routing.client.get("/v1/routing/rules", headers=ADMIN)).json() == before


async def test_rules_put_as_json_takes_effect_for_the_next_lead(routing: RoutingApp) -> None:
    rules = {"fallback_team": "t", "rules": [{"id": "all-to-r2", "action": {"rep": "r2"}}]}
    response = await routing.client.put("/v1/routing/rules", json=rules, headers=ADMIN)
    assert response.status_code == 200
    current = (await routing.client.get("/v1/routing/rules", headers=ADMIN)).json()
    assert current["version"] == response.json()["version"] and current["rules"] == rules
    routed = (await routing.route(scored()))["current_assignment"]
    assert (routed["rep_id"], routed["rule_id"], routed["ruleset_version"]) == ("r2", "all-to-r2", current["version"])


# -- simulate ---------------------------------------------------------------------------------------------------


async def test_simulate_returns_the_decision_the_router_then_makes_and_writes_nothing(routing: RoutingApp) -> None:
    await routing.client.put("/v1/accounts/acme.com", json={"owner": "r2"}, headers=ADMIN)
    await routing.patch_rep("r3", max_open=0)
    first = await routing.route(scored())
    await routing.router_act(first["lead_id"], "convert")  # its repeat below is then a new lead, routed
    leads = [
        scored(grade="A"),
        scored(email="kim@acme.com", enrichment={}),
        scored(duplicate_of=first["lead_id"]),
        scored(grade="C", language="de"),
        scored(grade="B"),
    ]
    for event in leads:
        body = {key: event.data[key] for key in ("lead", "enrichment", "score", "source", "is_test", "duplicate_of")}
        simulated = await routing.client.post("/v1/routing/simulate", json=body, headers=ADMIN)
        again = await routing.client.post("/v1/routing/simulate", json=body, headers=ADMIN)
        assert simulated.status_code == 200 and simulated.json() == again.json()  # nothing moved in between
        decision = simulated.json()
        real = (await routing.route(event))["current_assignment"]
        for key in ("outcome", "rep_id", "team_id", "rule_id", "ruleset_version", "method", "reason", "candidates"):
            assert real[key] == decision[key], key


async def test_simulate_with_candidate_rules_and_with_broken_ones(routing: RoutingApp) -> None:
    body = scored().data | {"rules_yaml": "fallback_team: t\nrules:\n  - {id: r3-only, action: {rep: r3}}\n"}
    body = {k: body[k] for k in ("lead", "enrichment", "score", "source", "rules_yaml")}
    decision = (await routing.client.post("/v1/routing/simulate", json=body, headers=ADMIN)).json()
    assert (decision["rep_id"], decision["rule_id"]) == ("r3", "r3-only")
    broken = await routing.client.post(
        "/v1/routing/simulate", json={**body, "rules_yaml": "rules: [{action: {team: t}}]"}, headers=ADMIN
    )
    assert broken.status_code == 422 and broken.json()["detail"][0]["path"] == "fallback_team"


# -- erasure ---------------------------------------------------------------------------------------------------


async def test_erasure_deletes_the_personal_data_and_keeps_the_anonymous_decision(routing: RoutingApp) -> None:
    secret = {
        "email": "dana.secret@initech.example",
        "first_name": "Dana",
        "last_name": "Zyxwvut",
        "phone": "+4915112345678",
    }
    enrichment = {
        "domain": "initech.example",
        "company": {"name": "Initech", "domain": "initech.example"},
        "steps": [{"step": "domain", "detail": "initech.example"}],
        "seniority": "vp",
    }
    lead = scored(grade="B", enrichment=enrichment, **secret)
    before = await routing.route(lead)
    await routing.client.post(f"/v1/leads/{lead.subject}/actions", json={"action": "touch"}, headers=ADMIN)

    erased = Event(
        type="lead.erased",
        source="/tests",
        subject=lead.subject,
        data={"lead_id": lead.subject, "erased_at": datetime.now(UTC).isoformat()},
    )
    async with routing.app.state.runtime.db.transaction() as session:
        await routing.router.on_erased(session, erased)

    after = await routing.lead(lead.subject)
    assert after["erased"] is True
    # The decision record stays: who got it, by which rule and ruleset, every candidate and why.
    assert after["assignments"] == before["assignments"]
    assert after["current_assignment"]["rule_id"] == "everyone" and after["time_to_first_touch"] is not None
    async with routing.app.state.runtime.db.read() as session:
        row = await session.get(LeadRow, lead.subject)
        assignments = (await session.execute(select(AssignmentRow))).scalars().all()
        timeline = (await session.execute(select(TimelineRow))).scalars().all()
    assert row is not None and row.view is not None
    assert row.view["lead"] == {} and row.view["score"]["grade"] == "B"
    # The shared erasure rule (common.erasure): a company's name can identify the person, so it goes too.
    assert row.view["enrichment"] == {"company": {}, "seniority": "vp"}
    stored = json.dumps([row.view, [a.decision for a in assignments], [t.detail for t in timeline]])
    for value in [*secret.values(), "initech.example", "Initech"]:
        assert value not in stored
    assert "erased" in [t.kind for t in timeline]

    # Erased before it was scored (events can cross): routing never stores the person at all.
    early = str(uuid.uuid4())
    erased_first = Event(
        type="lead.erased",
        source="/tests",
        subject=early,
        data={"lead_id": early, "erased_at": datetime.now(UTC).isoformat()},
    )
    async with routing.app.state.runtime.db.transaction() as session:
        await routing.router.on_erased(session, erased_first)
    late = await routing.route(scored(early, enrichment=enrichment, **secret))
    assert late["erased"] is True and late["current_assignment"]["outcome"] == "assigned"
    async with routing.app.state.runtime.db.read() as session:
        late_row = await session.get(LeadRow, early)
    assert late_row is not None and late_row.view is not None
    assert not any(value in json.dumps(late_row.view) for value in [*secret.values(), "initech.example"])


async def test_one_batch_assigns_a_twice_published_lead_once_and_erases_a_lead_it_just_routed(
    routing: RoutingApp,
) -> None:
    """A consumer batch is one transaction: what it routed earlier counts before anything is written."""
    twice = scored(grade="A", email="twice@example.org")
    again = Event(type="lead.scored", source="/tests", subject=twice.subject, data=twice.data)  # another event id
    gone = scored(grade="B", email="gone.person@example.org", phone="+4915112345679")
    erased = Event(
        type="lead.erased",
        source="/tests",
        subject=gone.subject,
        data={"lead_id": gone.subject, "erased_at": datetime.now(UTC).isoformat()},
    )
    async with routing.app.state.runtime.db.transaction() as session:
        for event in (twice, again, gone):
            await routing.router.on_scored(session, event)
        await routing.router.on_erased(session, erased)

    async with routing.app.state.runtime.db.read() as session:
        assignments = (await session.execute(select(AssignmentRow.lead_id, AssignmentRow.id))).all()
        gone_row = await session.get(LeadRow, gone.subject)
    assert sorted(lead_id for lead_id, _ in assignments) == sorted([twice.subject, gone.subject])
    assert len({assignment_id for _, assignment_id in assignments}) == 2
    assert gone_row is not None and gone_row.erased_at is not None
    assert "gone.person@example.org" not in json.dumps(gone_row.view)
    after = await routing.lead(twice.subject)
    assert [a["rep_id"] for a in after["assignments"]] == [after["current_assignment"]["rep_id"]]


# -- backtest ---------------------------------------------------------------------------------------------------

TUESDAY = datetime(2025, 3, 4, tzinfo=UTC)
CANDIDATE = """
fallback_team: t
rules:
  - id: hot-to-day-team
    when: {score.grade: A}
    action: {team: d, method: round_robin}
  - id: rest
    action: {team: t, method: round_robin}
"""


async def _table_snapshot(routing: RoutingApp) -> list[Any]:
    from routing.store import RepLoadRow, RotationRow

    async with routing.app.state.runtime.db.read() as session:
        snapshot: list[Any] = []
        for model, key in (
            (LeadRow, "lead_id"),
            (AssignmentRow, "id"),
            (TimelineRow, "id"),
            (RotationRow, "rep_id"),
            (RepLoadRow, "rep_id"),
        ):
            rows = (await session.execute(select(model).order_by(getattr(model, key)))).scalars().all()
            snapshot.append([{c.name: getattr(r, c.key) for c in model.__table__.columns} for r in rows])
        return snapshot


async def test_backtest_replays_a_window_through_candidate_rules_beside_the_current_ones(routing: RoutingApp) -> None:
    # A day team (09:00-17:00 UTC, at most 2 open leads each) beside the around-the-clock team t.
    day = {"name": "Day", "method": "round_robin", "hours": {"mon-fri": "09:00-17:00"}}
    assert (await routing.client.put("/v1/teams/d", json=day, headers=ADMIN)).status_code == 200
    for rep_id in ("d1", "d2"):
        body = {
            "name": rep_id.upper(),
            "email": f"{rep_id}@example.com",
            "team": "d",
            "max_open": 2,
            "hours": {"mon-fri": "09:00-17:00"},
        }
        assert (await routing.client.put(f"/v1/reps/{rep_id}", json=body, headers=ADMIN)).status_code == 200

    # These leads are routed in the past; the app's timer loop, on the real clock, would escalate them all now.
    await routing.app.state.timers.stop()
    clock = Clock(TUESDAY)
    routing.router.clock = clock
    window: dict[str, str] = {}  # lead id -> grade, in routing order
    times = [TUESDAY.replace(hour=10, minute=k) for k in range(6)]
    times += [TUESDAY.replace(hour=22, minute=k) for k in range(4)]
    for k, at in enumerate(times):
        clock.now = at
        event = scored(grade="A" if k % 2 == 0 else "B")
        window[event.subject] = event.data["score"]["grade"]
        await routing.route(event)
    first = next(iter(window))
    clock.now = TUESDAY.replace(hour=10, minute=30)
    await routing.router_act(first, "convert")
    for outside in (TUESDAY - timedelta(hours=1), TUESDAY + timedelta(days=1, hours=1)):
        clock.now = outside
        await routing.route(scored(grade="A"))

    before = await _table_snapshot(routing)
    response = await routing.client.post(
        "/v1/routing/backtest",
        json={"rules": CANDIDATE, "since": TUESDAY.isoformat(), "until": (TUESDAY + timedelta(days=1)).isoformat()},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert await _table_snapshot(routing) == before, "a backtest writes nothing"
    assert result["window"]["leads"] == 10 and result["model"]

    current, candidate = result["current"], result["candidate"]
    assert current["ruleset_version"] != candidate["ruleset_version"]
    assert current["outcomes"]["assigned"] == 10 and current["projected_breaches"] == 0
    current_loads = {r["rep_id"]: r["leads"] for r in current["reps"]}
    assert sorted(current_loads[rep] for rep in ("r1", "r2", "r3")) == [3, 3, 4]
    assert current_loads["d1"] == current_loads["d2"] == 0

    loads = {r["rep_id"]: r for r in candidate["reps"]}
    # Day leads rotate d1, d2, d1 (d1 is then full); the first lead closed at 10:30, so at night d1 has room
    # again: the two night A leads go to d2 and d1, outside their hours. Without the close, the second one
    # would have found both full and been queued.
    assert (loads["d1"]["leads"], loads["d2"]["leads"]) == (3, 2)
    assert candidate["projected_breaches_by_reason"] == {
        "queued": 0,
        "outside_hours": 2,
        "over_capacity": 0,
        "late_first_touch": 0,
    }
    assert (loads["d1"]["projected_breaches"], loads["d2"]["projected_breaches"]) == (1, 1)
    assert sum(loads[rep]["leads"] for rep in ("r1", "r2", "r3")) == 5

    changed = {item["lead_id"]: item for item in result["changed"]["leads"]}
    assert result["changed"]["count"] == len(changed)
    hot = {lead_id for lead_id, grade in window.items() if grade == "A"}
    assert hot <= set(changed)
    for lead_id, item in changed.items():
        assert item["current"] != item["candidate"]
        if lead_id in hot:
            assert item["candidate"]["team_id"] == "d" and item["candidate"]["rule_id"] == "hot-to-day-team"
    night = [lead_id for lead_id, at in zip(window, times, strict=True) if at.hour == 22 and window[lead_id] == "A"]
    assert all(changed[lead_id]["candidate"]["projected_breach"] == "outside_hours" for lead_id in night)


@pytest.mark.parametrize(
    ("body", "error", "path"),
    [
        ({"rules": "fallback_team: t\nrules: [{action: {team: nope}}]"}, "invalid_rules", "rules[0].action.team"),
        (
            {"rules": {"fallback_team": "t", "rules": [{"when": {"grade": "A"}, "action": {"team": "t"}}]}},
            "invalid_rules",
            "rules[0].when.grade",
        ),
        (
            {"rules": "fallback_team: t", "since": "2025-03-05T00:00:00Z", "until": "2025-03-04T00:00:00Z"},
            "validation_failed",
            "since",
        ),
    ],
)
async def test_backtest_refuses_bad_candidates_and_windows(
    routing: RoutingApp, body: dict[str, Any], error: str, path: str
) -> None:
    response = await routing.client.post("/v1/routing/backtest", json=body, headers=ADMIN)
    assert response.status_code == 422 and response.json()["error"] == error
    detail = response.json()["detail"][0]
    assert detail.get("path", detail.get("field")) == path


# -- untrusted bodies ------------------------------------------------------------------------------------------


async def test_an_anonymous_request_with_a_malformed_body_is_refused_401_not_400(routing: RoutingApp) -> None:
    malformed = {"content": b'{"lead": {"email": ', "headers": {"Content-Type": "application/json"}}
    for method, path in (("POST", "/v1/routing/simulate"), ("PUT", "/v1/reps/r9"), ("POST", "/v1/webhook-endpoints")):
        for auth in ({}, {"Authorization": "Bearer not-the-admin-token-0123"}):
            kwargs: dict[str, Any] = {**malformed, "headers": {**malformed["headers"], **auth}}
            response = await routing.client.request(method, path, **kwargs)
            assert response.status_code == 401, (method, path, auth, response.text)
            assert response.json()["error"] == "unauthorized"
    # With the token, the same body is what is wrong.
    admin = {**malformed, "headers": {**malformed["headers"], **ADMIN}}
    assert (await routing.client.post("/v1/routing/simulate", **admin)).status_code == 400


async def test_json_nested_too_deep_is_a_400_naming_the_body_on_an_admin_route(routing: RoutingApp) -> None:
    deep = b'{"name": "Deep", "team_ids": ["t"], "notes": ' + b'{"a":' * 500 + b"1" + b"}" * 500 + b"}"
    for method, path in (("PUT", "/v1/reps/r9"), ("POST", "/v1/routing/simulate")):
        response = await routing.client.request(
            method, path, content=deep, headers={**ADMIN, "Content-Type": "application/json"}
        )
        assert response.status_code == 400, (path, response.text)
        assert response.json()["detail"] == [{"field": "body", "reason": "JSON nested deeper than 32 levels"}]
    assert (await routing.client.get("/v1/reps/r9", headers=ADMIN)).status_code == 404


# -- rule language: RE2 regexes, alias bombs, conversion odds and quality flags ------------------------------------


def _alias_bomb(top: str) -> str:
    levels = [f"{top}: &a [x, x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefg", "bcdefgh", strict=False):
        levels.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    return "\n".join(levels) + "\n"


async def test_lookaround_regexes_and_alias_bombs_are_refused_at_put_naming_the_line(routing: RoutingApp) -> None:
    before = (await routing.client.get("/v1/routing/rules", headers=ADMIN)).json()
    yaml_body = {**ADMIN, "Content-Type": "application/yaml"}
    lookahead = (
        "fallback_team: t\nrules:\n  - id: demo\n    action: {rep: r1}\n"
        "    when: {lead.message: {regex: 'demo(?=.*pricing)'}}\n"
    )
    response = await routing.client.put("/v1/routing/rules", content=lookahead, headers=yaml_body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert (error["path"], error["line"]) == ("rules[0].when.lead.message.regex", 5)
    assert "lookahead and lookbehind are not supported" in error["reason"]
    bomb = await routing.client.put("/v1/routing/rules", content=_alias_bomb("fallback_team"), headers=yaml_body)
    assert bomb.status_code == 422 and bomb.json()["error"] == "invalid_rules"
    assert "too large" in bomb.json()["detail"][0]["reason"]
    roster_bomb = await routing.client.post("/v1/roster", content=_alias_bomb("teams"), headers=yaml_body)
    assert roster_bomb.status_code == 422 and "too large" in roster_bomb.json()["detail"][0]["reason"]
    assert (await routing.client.get("/v1/routing/rules", headers=ADMIN)).json() == before


async def test_rules_on_conversion_odds_quality_flags_and_a_catastrophic_regex_route_real_leads(
    routing: RoutingApp,
) -> None:
    rules = """
fallback_team: t
rules:
  - id: likely-to-buy
    when: {score.conversion.probability: {range: {gte: 0.6}}}
    action: {rep: r1}
  - id: needs-a-check
    when: {quality.flags: {contains: phone_unparsed}}
    action: {rep: r2}
  - id: one-word-messages
    when: {lead.message: {regex: '^(\\w+\\s?)*$'}}
    action: {rep: r3}
"""
    yaml_body = {**ADMIN, "Content-Type": "application/yaml"}
    put = await routing.client.put("/v1/routing/rules", content=rules, headers=yaml_body)
    assert put.status_code == 200, put.text

    likely = scored(message="hello")
    likely.data["conversion"] = {"probability": 0.71, "status": "ok", "outcomes_seen": 120}
    flagged = scored(message="hello")
    flagged.data["quality"] = {"flags": ["phone_unparsed"]}
    crafted = scored(message="a" * 9_999 + "!")  # backtracks for hours under Python's re
    plain = scored(message="call me back")
    expected = [(likely, "likely-to-buy"), (flagged, "needs-a-check"), (crafted, None), (plain, "one-word-messages")]
    for event, rule_id in expected:
        assignment = (await routing.route(event))["current_assignment"]
        assert assignment["rule_id"] == rule_id, assignment  # the crafted message matches no rule: fallback team

    body = {k: flagged.data[k] for k in ("lead", "enrichment", "score", "source", "quality")}
    simulated = await routing.client.post("/v1/routing/simulate", json=body, headers=ADMIN)
    assert simulated.status_code == 200 and simulated.json()["rule_id"] == "needs-a-check"
