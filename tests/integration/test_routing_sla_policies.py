"""SLA policies as data on a real store (SQLite and PostgreSQL) with the test clock: a rule's `sla:` block sets the
due time, a notify_manager step tells the manager and keeps the rep, the follow-up clock after the first touch; and
through the HTTP API, a PUT of new rules changes the next lead's policy, simulate shows it, backtest projects it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from routing.app import create_app
from routing.store import TimelineRow
from tests.support.contracts import validate_event
from tests.support.routing import ROSTER, Clock, routing_on, scored, service_settings
from tests.support.stack import ADMIN

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)  # a Tuesday; the roster works around the clock

# The team has its own policy; the hot rule's block wins over it where it says something.
TEAM_ROSTER = ROSTER.replace("queue_business_hours: false}", "queue_business_hours: false, sla: {minutes: 20}}")
RULES = """
fallback_team: t
rules:
  - id: hot
    when: {score.grade: A}
    action: {team: t, method: round_robin}
    sla: {minutes: 2, business_hours: false}
  - id: rest
    action: {team: t, method: round_robin}
"""


async def test_a_rules_sla_block_sets_the_due_time_over_the_team_and_the_defaults(database_url: str) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, roster=TEAM_ROSTER, rules=RULES) as routing:
        hot, warm = scored(grade="A"), scored(grade="B")
        await routing.route(hot)
        await routing.route(warm)
        assigned = {e.subject: e.data["sla"] for e in await routing.events("lead.assigned")}
        assert assigned[hot.subject]["minutes"] == 2  # the rule's block
        assert assigned[hot.subject]["due_at"] == (T0 + timedelta(minutes=2)).isoformat()
        assert assigned[warm.subject]["minutes"] == 20  # no rule block: the team's
        assert assigned[warm.subject]["due_at"] == (T0 + timedelta(minutes=20)).isoformat()

        clock.advance(minutes=2)
        await routing.fire()
        (breach,) = await routing.events("lead.sla_breached")
        assert breach.subject == hot.subject and breach.data["clock"] == "first_contact"
        assert breach.data["step"] == "reassign"  # no ladder in any block: the environment's


NOTIFY_RULES = """
fallback_team: t
rules:
  - id: hot
    action: {team: t, method: round_robin}
    sla:
      minutes: 5
      escalation: [{step: notify_manager, minutes: 3}, reassign]
"""


async def test_a_notify_manager_step_emits_the_escalation_and_keeps_the_rep_on_a_new_clock(database_url: str) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, rules=NOTIFY_RULES) as routing:
        lead = scored(grade="A")
        await routing.route(lead)
        (assigned,) = await routing.events("lead.assigned")
        assert assigned.data["rep"]["id"] == "r1"

        clock.advance(minutes=5)
        await routing.fire()
        (breach,) = await routing.events("lead.sla_breached")
        assert (breach.data["step"], breach.data["manager_id"], breach.data["rep_id"]) == ("notify_manager", "m", "r1")
        assert validate_event("lead.sla_breached", breach.data) == []  # the escalation event keeps the contract
        assert await routing.events("lead.reassigned") == []  # the rep keeps the lead
        async with routing.db.read() as session:
            escalated = (
                await session.execute(
                    select(TimelineRow).where(TimelineRow.lead_id == lead.subject, TimelineRow.kind == "escalated")
                )
            ).scalar_one()
        assert escalated.detail["manager_id"] == "m" and escalated.detail["rep_id"] == "r1"
        assert escalated.detail["sla_due_at"] == (clock.now + timedelta(minutes=3)).isoformat()  # the step's clock

        clock.advance(minutes=3)  # the notify step's clock runs out: the next step reassigns
        await routing.fire()
        breaches = await routing.events("lead.sla_breached")
        assert [b.data["step"] for b in breaches] == ["notify_manager", "reassign"]
        (reassigned,) = await routing.events("lead.reassigned")
        assert (reassigned.data["previous_rep_id"], reassigned.data["rep"]["id"]) == ("r1", "r2")
        assert reassigned.data["reassign_reason"] == "sla_breach"


FOLLOW_UP_RULES = """
fallback_team: t
rules:
  - id: hot
    action: {team: t, method: round_robin}
    sla: {follow_up: {touches: 3, within_hours: 2}}
"""


async def test_the_follow_up_clock_breaches_when_touches_are_missing_and_not_when_they_are_recorded(
    database_url: str,
) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, rules=FOLLOW_UP_RULES) as routing:
        neglected, worked = scored(grade="B"), scored(grade="B")
        await routing.route(neglected)
        await routing.route(worked)
        clock.advance(minutes=1)
        await routing.act(neglected.subject, "touch")
        await routing.act(worked.subject, "touch")
        clock.advance(minutes=30)
        await routing.act(neglected.subject, "touch")  # two touches of three
        await routing.act(worked.subject, "touch")
        clock.advance(minutes=30)
        await routing.act(worked.subject, "touch")  # the third, within the window: its follow-up clock stops

        clock.advance(hours=2)
        await routing.fire()
        (breach,) = await routing.events("lead.sla_breached")
        assert breach.subject == neglected.subject
        assert (breach.data["clock"], breach.data["step"]) == ("follow_up", None)
        assert validate_event("lead.sla_breached", breach.data) == []
        assert breach.data["due_at"] == (T0 + timedelta(minutes=1, hours=2)).isoformat()
        assert await routing.events("lead.reassigned") == []  # a follow-up breach escalates nothing
        assert await routing.fire() == 0


# -- through the HTTP API: PUT rules, simulate, backtest ---------------------------------------------------------


@pytest.fixture
async def app(database_url: str, kafka_bootstrap: str, namespace: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = service_settings(
        database_url,
        tmp_path,
        kafka_bootstrap=kafka_bootstrap,
        namespace=namespace,
        rules="fallback_team: t\nrules: [{id: all, action: {team: t}}]\n",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        await application.state.timers.stop()  # the test clock decides; the real one would escalate past leads
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://routing.test") as http:
        yield http


def _rules(minutes: float) -> str:
    return f"fallback_team: t\nrules:\n  - id: all\n    action: {{team: t}}\n    sla: {{minutes: {minutes}}}\n"


async def _route(app: FastAPI, client: httpx.AsyncClient, grade: str = "A") -> dict[str, Any]:
    event = scored(grade=grade)
    async with app.state.runtime.db.transaction() as session:
        await app.state.router.on_scored(session, event)
    response = await client.get(f"/v1/leads/{event.subject}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.kafka
async def test_a_put_of_new_rules_changes_the_policy_for_the_next_lead_without_a_restart(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    clock = Clock(T0)
    app.state.router.clock = clock
    assert (await client.put("/v1/routing/rules", content=_rules(2), headers=ADMIN)).status_code == 200
    first = await _route(app, client)
    refused = await client.put("/v1/routing/rules", content=_rules(0), headers=ADMIN)
    assert refused.status_code == 422
    assert refused.json()["error"] == "invalid_rules"
    assert {"path": "rules[0].sla.minutes", "reason": "must be > 0"} in refused.json()["detail"]
    assert (await client.put("/v1/routing/rules", content=_rules(7), headers=ADMIN)).status_code == 200
    second = await _route(app, client)
    (one,), (two,) = first["assignments"], second["assignments"]
    assert (one["sla"]["minutes"], one["sla"]["due_at"]) == (2, (T0 + timedelta(minutes=2)).isoformat())
    assert (two["sla"]["minutes"], two["sla"]["due_at"]) == (7, (T0 + timedelta(minutes=7)).isoformat())


@pytest.mark.kafka
async def test_simulate_shows_the_policy_that_would_apply_for_the_active_and_candidate_rules(
    client: httpx.AsyncClient,
) -> None:
    candidate = (
        "fallback_team: t\nrules:\n  - id: hot\n    action: {team: t}\n"
        "    sla: {minutes: {A: 4}, escalation: [{step: notify_manager, minutes: 6}, manager]}\n"
    )
    body = {"score": {"grade": "A", "qualified": True}, "at": T0.isoformat()}
    active = (await client.post("/v1/routing/simulate", json=body, headers=ADMIN)).json()
    assert active["outcome"] == "assigned"
    assert (active["sla"]["minutes"], active["sla"]["source"]) == (5, "default")  # no block: the environment's
    assert active["sla"]["due_at"] == (T0 + timedelta(minutes=5)).isoformat()
    assert [s["step"] for s in active["sla"]["escalation"]] == ["reassign", "reassign", "manager"]

    tried = (await client.post("/v1/routing/simulate", json={**body, "rules_yaml": candidate}, headers=ADMIN)).json()
    assert (tried["sla"]["minutes"], tried["sla"]["source"]) == (4, "rule:hot")
    assert tried["sla"]["due_at"] == (T0 + timedelta(minutes=4)).isoformat()
    ladder = [{"step": "notify_manager", "minutes": 6}, {"step": "manager", "minutes": None}]
    assert tried["sla"]["escalation"] == ladder
    undated = {k: v for k, v in body.items() if k != "at"}  # no `at`: the same policy, no due time
    assert (await client.post("/v1/routing/simulate", json=undated, headers=ADMIN)).json()["sla"]["due_at"] is None
    nurtured = {"score": {"grade": "D"}, "rules_yaml": "fallback_team: t\nrules: [{action: {nurture: true}}]"}
    assert (await client.post("/v1/routing/simulate", json=nurtured, headers=ADMIN)).json()["sla"] is None


@pytest.mark.kafka
async def test_backtest_projects_breaches_under_a_tighter_candidate_policy(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    clock = Clock(T0)
    app.state.router.clock = clock
    leads = []
    for k in range(4):  # B leads (60 minutes by default), first touched after 10 minutes
        clock.now = T0 + timedelta(minutes=k)
        leads.append((await _route(app, client, grade="B"))["lead_id"])
    clock.now = T0 + timedelta(minutes=10)
    for lead_id in leads[:3]:
        async with app.state.runtime.db.transaction() as session:
            await app.state.router.act(session, lead_id, "touch", rep_id=None, reason=None, correlation_id=None)

    window = {"since": T0.isoformat(), "until": (T0 + timedelta(hours=1)).isoformat()}
    result = (await client.post("/v1/routing/backtest", json={"rules": _rules(5), **window}, headers=ADMIN)).json()
    current, candidate = result["current"], result["candidate"]
    assert current["projected_breaches"] == 0
    # Touched after 10 minutes: late under a 5-minute policy; the untouched lead is not projected.
    assert candidate["projected_breaches_by_reason"]["late_first_touch"] == 3
    assert candidate["projected_breaches"] == 3
    assert sum(rep["projected_breaches"] for rep in candidate["reps"]) == 3
