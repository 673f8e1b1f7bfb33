"""Repeats join the open lead (issue 11 item 6), on a real store (SQLite and PostgreSQL): one assignment and one
clock per person while their lead is open, tightened by a hotter repeat, exactly once under redelivery; after the
lead is closed a repeat is a new lead that goes back to the same rep."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from common.envelope import Event
from routing.store import AssignmentRow, LeadRow, RepLoadRow, SlaTimer, TimelineRow
from tests.support.contracts import validate_event
from tests.support.routing import Clock, Routing, routing_on, scored

pytestmark = pytest.mark.integration

# A Tuesday morning; routing_on's settings count SLAs on the wall clock.
T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
SLA = {"A": 5, "B": 60, "C": 480, "D": 60}  # minutes, as the shipped defaults


async def _rows(routing: Routing, model: Any, lead_id: str) -> list[Any]:
    async with routing.db.read() as session:
        column = model.lead_id
        return list((await session.execute(select(model).where(column == lead_id))).scalars())


async def _lead(routing: Routing, lead_id: str) -> LeadRow:
    async with routing.db.read() as session:
        lead = await session.get(LeadRow, lead_id)
    assert lead is not None
    return lead


async def _open_load(routing: Routing, rep_id: str) -> int:
    async with routing.db.read() as session:
        row = await session.get(RepLoadRow, rep_id)
    return row.open_leads if row else 0


async def _pending(routing: Routing, lead_id: str) -> list[tuple[str, float | None, datetime]]:
    timers = [t for t in await _rows(routing, SlaTimer, lead_id) if t.fired_at is None]
    return sorted((t.kind, t.fraction, t.due_at.replace(tzinfo=UTC)) for t in timers)


def _again(event: Event) -> Event:
    """The same lead.scored re-published by scoring: same lead, a new event id (the consumer's dedupe misses it)."""
    return Event(type=event.type, source=event.source, subject=event.subject, time=event.time, data=event.data)


async def test_a_repeat_while_the_lead_is_open_joins_it_keeps_rep_and_clock_and_starts_no_assignment(
    database_url: str,
) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, sla_minutes=SLA) as routing:
        original = scored(grade="B")
        await routing.route(original)
        (assigned,) = await routing.events("lead.assigned")
        rep, due = assigned.data["rep"]["id"], assigned.data["sla"]["due_at"]
        timers_before = await _pending(routing, original.subject)

        clock.advance(minutes=10)
        # A cooler repeat with a new message: recorded, nothing about the clock or the rep changes.
        repeat = scored(
            grade="C", duplicate_of=original.subject, message="Any news? Please call me back", form_id="contact-us"
        )
        await routing.route(repeat)

        assert await _rows(routing, AssignmentRow, repeat.subject) == []
        assert len(await _rows(routing, AssignmentRow, original.subject)) == 1
        assert await _open_load(routing, rep) == 1
        assert await _pending(routing, original.subject) == timers_before
        merged = await _lead(routing, repeat.subject)
        assert (merged.status, merged.merged_into) == ("merged", original.subject)
        kept = await _lead(routing, original.subject)
        assert (kept.status, kept.current_rep_id, kept.grade) == ("assigned", rep, "B")

        (event,) = await routing.events("lead.resubmitted")
        assert validate_event("lead.resubmitted", event.data) == []
        assert event.subject == event.data["lead_id"] == original.subject
        assert event.data["repeat_lead_id"] == repeat.subject
        assert event.data["lead"] == {"message": "Any news? Please call me back", "form_id": "contact-us"}
        assert (event.data["grade"], event.data["grade_raised"], event.data["clock_tightened"]) == ("C", False, False)
        assert event.data["rep_id"] == rep and event.data["sla_due_at"] == due
        timeline = [row for row in await _rows(routing, TimelineRow, original.subject) if row.kind == "resubmitted"]
        assert [row.detail["repeat_lead_id"] for row in timeline] == [repeat.subject]
        assert timeline[0].detail["lead"]["message"] == "Any news? Please call me back"
        assert await routing.events("lead.assigned", "lead.reassigned") == [assigned]


async def test_a_hotter_repeat_tightens_the_clock_and_its_warnings_and_raises_the_grade(database_url: str) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, sla_minutes=SLA) as routing:
        original = scored(grade="C")  # an eight-hour clock
        await routing.route(original)
        (assigned,) = await routing.events("lead.assigned")
        assert assigned.data["sla"]["due_at"] == (T0 + timedelta(minutes=480)).isoformat()

        clock.advance(minutes=30)
        repeat = scored(grade="A", duplicate_of=original.subject, message="Can I get a demo today?")
        await routing.route(repeat)
        (event,) = await routing.events("lead.resubmitted")
        new_due = clock.now + timedelta(minutes=5)
        assert event.data["clock_tightened"] is True and event.data["grade_raised"] is True
        assert event.data["sla_due_at"] == new_due.isoformat()
        assert event.data["previous_sla_due_at"] == (T0 + timedelta(minutes=480)).isoformat()
        assert (await _lead(routing, original.subject)).grade == "A"
        # The old clock's timers are gone; the new one's warning and breach are all that wait.
        assert await _pending(routing, original.subject) == [
            ("breach", None, new_due),
            ("warning", 0.5, clock.now + timedelta(minutes=2.5)),
        ]

        clock.advance(minutes=2.5)
        assert await routing.fire() == 1
        (warning,) = await routing.events("lead.sla_warning")
        assert warning.data["sla_due_at"] == new_due.isoformat() and warning.data["grade"] == "A"
        clock.advance(minutes=2.5)
        await routing.fire()
        (breach,) = await routing.events("lead.sla_breached")
        assert breach.data["assignment_id"] == assigned.data["assignment_id"]
        # The breach escalates the one lead; the repeat itself never had a rep.
        assert [e.subject for e in await routing.events("lead.reassigned")] == [original.subject]
        assert await _rows(routing, AssignmentRow, repeat.subject) == []


async def test_a_replayed_repeat_changes_nothing_and_a_repeat_of_a_repeat_joins_the_same_lead(
    database_url: str,
) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, sla_minutes=SLA) as routing:
        original = scored(grade="C")
        await routing.route(original)
        clock.advance(minutes=5)
        repeat = scored(grade="B", duplicate_of=original.subject)
        await routing.route(repeat)
        timers = await _pending(routing, original.subject)
        timeline = len(await _rows(routing, TimelineRow, original.subject))

        clock.advance(minutes=5)
        await routing.route(repeat)  # redelivered
        await routing.route(_again(repeat))  # re-published with a new event id
        assert [e.data["repeat_lead_id"] for e in await routing.events("lead.resubmitted")] == [repeat.subject]
        assert await _pending(routing, original.subject) == timers  # tightened once, to B's hour from then
        assert timers[0] == ("breach", None, T0 + timedelta(minutes=65))
        assert len(await _rows(routing, TimelineRow, original.subject)) == timeline

        # Ingest names the first lead in its window, which may be the repeat: routing follows it to the open lead.
        third = scored(grade="C", duplicate_of=repeat.subject)
        await routing.route(third)
        assert (await _lead(routing, third.subject)).merged_into == original.subject
        assert len(await routing.events("lead.assigned")) == 1


async def test_after_the_lead_is_converted_a_repeat_is_a_new_lead_for_the_same_rep(database_url: str) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, sla_minutes=SLA) as routing:
        original = scored(grade="B")
        await routing.route(original)
        for _ in range(1):  # the rotation moves on, so only stickiness brings the repeat back to the first rep
            await routing.route(scored(grade="B"))
        (first, *_) = await routing.events("lead.assigned")
        rep = first.data["rep"]["id"]
        await routing.act(original.subject, "convert")

        repeat = scored(grade="B", duplicate_of=original.subject)
        await routing.route(repeat)
        assert await routing.events("lead.resubmitted") == []
        (again,) = [e for e in await routing.events("lead.assigned") if e.subject == repeat.subject]
        assert again.data["rep"]["id"] == rep and again.data["method"] == "previous_rep"
        assert (await _lead(routing, repeat.subject)).merged_into is None

        # That new lead is the person's open one now: the next repeat (ingest still names the first) joins it.
        later = scored(grade="B", duplicate_of=original.subject)
        await routing.route(later)
        (joined,) = await routing.events("lead.resubmitted")
        assert joined.data["lead_id"] == repeat.subject


async def test_a_hotter_repeat_of_a_lead_in_nurture_routes_it_to_a_rep(database_url: str) -> None:
    rules = """
fallback_team: t
rules:
  - id: cold
    when: {score.grade: D}
    action: {nurture: true}
  - id: everyone
    action: {team: t, method: round_robin}
"""
    clock = Clock(T0)
    async with routing_on(database_url, clock, rules=rules, sla_minutes=SLA) as routing:
        original = scored(grade="D", form_id="ebook")
        await routing.route(original)
        assert (await _lead(routing, original.subject)).status == "nurture"
        repeat = scored(grade="A", duplicate_of=original.subject, form_id="demo-request")
        await routing.route(repeat)
        (reassigned,) = await routing.events("lead.reassigned")
        assert reassigned.subject == original.subject and reassigned.data["reassign_reason"] == "resubmitted"
        assert reassigned.data["rep"] is not None
        assert reassigned.data["sla"]["due_at"] == (T0 + timedelta(minutes=5)).isoformat()
        (event,) = await routing.events("lead.resubmitted")
        assert event.data["rerouted"] is True and event.data["rep_id"] == reassigned.data["rep"]["id"]
        assert await _rows(routing, AssignmentRow, repeat.subject) == []


async def test_erasing_a_repeat_empties_what_it_said_on_the_open_leads_timeline(database_url: str) -> None:
    clock = Clock(T0)
    async with routing_on(database_url, clock, sla_minutes=SLA) as routing:
        original = scored(grade="B", message="first words")
        await routing.route(original)
        repeat = scored(grade="B", duplicate_of=original.subject, message="call me on my private line")
        await routing.route(repeat)
        erased = Event(
            type="lead.erased",
            source="/tests",
            subject=repeat.subject,
            data={"lead_id": repeat.subject, "erased_at": clock.now.isoformat()},
            id=str(uuid.uuid4()),
        )
        async with routing.db.transaction() as session:
            await routing.router.on_erased(session, erased)
        (entry,) = [r for r in await _rows(routing, TimelineRow, original.subject) if r.kind == "resubmitted"]
        assert entry.detail["lead"] == {} and entry.detail["repeat_lead_id"] == repeat.subject
        assert ((await _lead(routing, original.subject)).view or {})["lead"]["message"] == "first words"
