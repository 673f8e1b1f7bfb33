"""A routing batch's rows: what each decision writes (lead, assignment, timers, timeline entry, lead.assigned),
held in memory until the batch writes them in a handful of executemany statements (routing.usecases.batch decides;
this module records and writes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession

from common.envelope import Event
from common.ids import new_id
from routing import metrics
from routing.domain import Decision, RoutingRules, SlaPolicy, WorkingHours, sla_deadline
from routing.domain.hours import working_span
from routing.domain.sla import ResolvedSla
from routing.store import RoutingRepository
from routing.store.decision_rows import AssignmentValues, LeadValues, TimelineValues, TimerValues
from routing.usecases.context import Roster, RoutingContext
from routing.usecases.decide import resolve_decision_sla
from routing.usecases.decisions import assignment_data, assignment_row, timeline_detail
from routing.usecases.shared import (
    EVENT_SOURCE,
    LoadState,
    clock_of,
    clock_rows,
    move_load,
    parse_time,
    publish,
    rotation,
)


@dataclass
class Pending:
    """Decisions made and not yet written: the rows of each table, the events, and the state they moved."""

    leads: list[LeadValues] = field(default_factory=list)
    assignments: list[AssignmentValues] = field(default_factory=list)
    timers: list[TimerValues] = field(default_factory=list)
    timeline: list[TimelineValues] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    rotated: set[str] = field(default_factory=set)
    # Each moved team's reps as its stored rotation rows hold them (the state before the batch's first move of it):
    # a team whose moved state drops one of them has its rows replaced whole; the others' are updated in place.
    stored: dict[str, frozenset[str]] = field(default_factory=dict)
    loads: dict[str, tuple[int, str | None, int]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[tuple[str, float]] = field(default_factory=list)
    first_timer: datetime | None = None
    # What depends only on the batch's roster, rules and moment, worked out once per batch: its clock (due time
    # and timers) by (policy, whose hours, zone); a decision's SLA policy is kept across batches (_slas).
    clocks: dict[tuple[Any, ...], tuple[datetime, list[dict[str, Any]]]] = field(default_factory=dict)
    # ISO text of the batch's moment and of each due time (the same for every lead they start a clock for), by
    # instant and zone: equal instants in two zones are equal datetimes with two texts.
    isos: dict[tuple[datetime, Any], str] = field(default_factory=dict)
    # The batch's event ids, made together (common.ids.new_ids: one read of randomness for all); taken from the
    # end, and one at a time once spent (a batch that writes mid-way starts a fresh Pending).
    event_ids: list[str] = field(default_factory=list)

    def iso(self, value: datetime) -> str:
        key = (value, value.tzinfo)
        text = self.isos.get(key)
        if text is None:
            text = self.isos[key] = value.isoformat()
        return text

    async def write(self, rt: RoutingContext, session: AsyncSession) -> None:
        state = await rotation(session)
        await RoutingRepository(session).insert_decisions(
            self.leads,
            self.assignments,
            self.timers,
            self.timeline,
            rotation={team: state.get(team, {}) for team in sorted(self.rotated)},
            loads=self.loads,
            dropped={team for team, reps in self.stored.items() if not reps <= state.get(team, {}).keys()},
        )
        await publish(rt, session, self.events)
        for outcome, count in self.outcomes.items():
            metrics.record(session, partial(_child(metrics.LEADS_ASSIGNED, outcome).inc, count))
        if self.latencies:
            metrics.record(session, partial(_observe, self.latencies))
        if self.first_timer is not None:
            rt.on_timer_written(self.first_timer)
        fresh = Pending()
        self.__dict__.update(fresh.__dict__)


def record(
    rt: RoutingContext,
    pending: Pending,
    roster: Roster,
    rules: RoutingRules,
    scored: Event,
    view: dict[str, Any],
    decision: Decision,
    assignment_id: int,
    now: datetime,
    erased: bool,
) -> None:
    """A decision's rows, timers, timeline entry and event, as assign writes them for one lead."""
    lead_id, data = scored.subject, scored.data
    grade = view["score"].get("grade")
    slas = _slas(rt, roster, rules)
    sla_key = (decision.outcome, decision.team_id, decision.rule_id, grade)
    if sla_key in slas:
        resolved = slas[sla_key]
    else:
        resolved = slas[sla_key] = resolve_decision_sla(rt, decision, roster, grade, rules=rules)
    rep, team = roster.rep(decision.rep_id), roster.team(decision.team_id)
    hours, tz = clock_of(rep, team)
    due, clock = None, None
    if resolved is not None and decision.outcome in ("assigned", "queued"):
        due, clock = _clock(pending, resolved.policy, hours, tz, now)
    source = view["source"]
    # A first lead's thread is itself: left NULL (read as its own id), so ix_leads_thread_id takes no random-key
    # entry a lead (one WAL page a lead at polls of 10); a repeat's thread is stored (assign).
    lead = LeadValues(
        lead_id,
        decision.outcome,  # status
        decision.rep_id,  # current_rep_id
        decision.team_id,
        grade,
        source.get("kind"),
        source.get("id"),
        None,  # duplicate_of
        view["is_test"],
        view,
        parse_time(data.get("received_at")),
        parse_time((data.get("lead") or {}).get("submitted_at")),
        now,  # routed_at
        None,  # first_touch_at
        0,  # reassignments
        now if erased else None,  # erased_at
        None,  # thread_id
        None,  # merged_into
    )
    assignment = assignment_row(assignment_id, lead_id, decision, resolved, due, 1, now)
    pending.leads.append(lead)
    pending.assignments.append(assignment)
    if decision.outcome == "held" and decision.hold_until:
        timers = [TimerValues(lead_id, assignment_id, "hold", None, decision.hold_until, False)]
    elif clock is not None:
        timers = [
            TimerValues(lead_id, assignment_id, row["kind"], row["fraction"], row["due_at"], False) for row in clock
        ]
    else:
        timers = []
    if timers:
        pending.timers.extend(timers)
        first = min(timer.due_at for timer in timers)
        if pending.first_timer is None or first < pending.first_timer:
            pending.first_timer = first
    # What ingest kept but could not read (phone_unparsed, ...) shows on the first timeline entry, for the rep.
    flags = view["quality"].get("flags")
    note = {"quality_flags": flags} if flags else None
    detail = timeline_detail(assignment_id, 1, decision, None, None, due, note, iso=pending.iso)
    pending.timeline.append(TimelineValues(lead_id, now, "assigned", detail))
    body = assignment_data(lead, assignment, decision, rep, None, None, iso=pending.iso)
    ids = pending.event_ids
    event_id = ids.pop() if ids else new_id()
    pending.events.append(
        Event("lead.assigned", EVENT_SOURCE, lead_id, body, event_id, now, correlation_id=scored.correlation_id)
    )
    pending.outcomes[decision.outcome] += 1
    # Speed of the pipeline itself: source submit and Handoff receipt to the first decision.
    for since, at in (("received", lead.received_at), ("submitted", lead.submitted_at)):
        if at is not None and at <= now:
            pending.latencies.append((since, (now - at).total_seconds()))


# A decision's SLA policy by (outcome, team, rule, grade): a function of the roster, the rules and the context's
# defaults alone, so kept while those objects are the ones in use (a roster or rules version is a new object);
# the entry holds them, so an identity is not reused while it is compared.
_SLAS: list[Any] = [None, None, None, None, {}]


def _slas(
    rt: RoutingContext, roster: Roster, rules: RoutingRules
) -> dict[tuple[str, str | None, str | None, str | None], ResolvedSla | None]:
    held = _SLAS
    if held[0] is not roster or held[1] is not rules or held[2] is not rt.sla_policies or held[3] is not rt.ladder:
        held[:] = [roster, rules, rt.sla_policies, rt.ladder, {}]
    return cast("dict[tuple[str, str | None, str | None, str | None], ResolvedSla | None]", held[4])


def _clock(
    pending: Pending, policy: SlaPolicy, hours: WorkingHours, tz: str, now: datetime
) -> tuple[datetime, list[dict[str, Any]]]:
    """An SLA clock started now: its due time and its timers (warnings, breach) without lead and assignment, once
    per policy, schedule and zone in a batch (the working-time walk is the same for every lead of equal weeks)."""
    key = (policy, _schedule_key(hours), tz)
    hit = pending.clocks.get(key)
    if hit is None:
        hit = pending.clocks[key] = _walked(key, policy, hours, tz, now)
    return hit


# The last clock walked per (policy, schedule, zone): (start, due, timers, the working span the start fell in).
_CLOCKS: dict[tuple[SlaPolicy, str, str], tuple[datetime, datetime, list[dict[str, Any]], Any]] = {}


def _walked(
    key: tuple[SlaPolicy, str, str], policy: SlaPolicy, hours: WorkingHours, tz: str, now: datetime
) -> tuple[datetime, list[dict[str, Any]]]:
    """The clock's due time and timers; the last batch's where the walk would give the same: moved by the time
    since for clock time, or working time with the last start and this one inside one working span and the
    moved due time in it too (a span is worked minute for minute); unmoved when both starts are before the same
    span (a clock started outside working time starts at the span). Else the walk (~60-100 us: the deadline,
    then the warnings' working minutes), once per batch and key."""
    last = _CLOCKS.get(key)
    if last is not None and now >= last[0]:
        start, due, rows, span = last
        delta = now - start
        if not policy.business_hours:
            return due + delta, [{**row, "due_at": row["due_at"] + delta} for row in rows]
        if span is not None and span[0] <= start and now < span[1] and due + delta <= span[1]:
            return due + delta, [{**row, "due_at": row["due_at"] + delta} for row in rows]
        if span is not None and now < span[0]:
            return due, [dict(row) for row in rows]
    due = sla_deadline(now, policy.minutes, business_hours=policy.business_hours, hours=hours, tz=tz)
    rows = [{k: v for k, v in row.items() if k not in _IDS} for row in clock_rows("", 0, policy, now, due, hours, tz)]
    if len(_CLOCKS) > 1024:
        _CLOCKS.clear()
    _CLOCKS[key] = (now, due, rows, working_span(now, hours=hours, tz=tz) if policy.business_hours else None)
    return due, rows


_IDS = ("lead_id", "assignment_id")

# Each schedule's value as a clock key, by the object's identity (the entry holds the object, so its id is not
# reused while it is there): reps with equal weeks (every rep of a team on the team's hours, or on "always") share
# one working-time walk per batch instead of one each. Kept across batches, as a roster's objects are: the repr
# costs ~15 us a rep, once per roster version instead of once per batch.
_SCHEDULE_KEYS: dict[int, tuple[WorkingHours, str]] = {}


def _schedule_key(hours: WorkingHours) -> str:
    hit = _SCHEDULE_KEYS.get(id(hours))
    if hit is not None and hit[0] is hours:
        return hit[1]
    if len(_SCHEDULE_KEYS) > 4096:
        _SCHEDULE_KEYS.clear()
    # repr names every field of the frozen dataclass; two equal weeks written in another order only miss.
    text = repr(hours)
    _SCHEDULE_KEYS[id(hours)] = (hours, text)
    return text


def moved(
    pending: Pending,
    state: dict[str, dict[str, int]],
    load_rows: dict[str, LoadState],
    roster: Roster,
    decision: Decision,
    days: Mapping[str, str],
) -> None:
    """The rotation and load a decision moved, in memory (the next decision sees them) and in the pending sums;
    `days`: each roster zone's local date at the batch's moment."""
    for team, positions in decision.rotation.items():
        if team not in pending.stored:
            # `state` holds what is stored until the batch writes (read at its start, or written by the one before).
            pending.stored[team] = frozenset(state.get(team, ()))
        state[team] = dict(positions)
        pending.rotated.add(team)
    rep = roster.rep(decision.rep_id)
    if decision.rep_id:
        day = days[rep.timezone] if rep else None
        move_load(load_rows, decision.rep_id, open_delta=1, day=day)
        delta, _, count = pending.loads.get(decision.rep_id, (0, day, 0))
        pending.loads[decision.rep_id] = (delta + 1, day, count + (1 if day else 0))


def _observe(latencies: Sequence[tuple[str, float]]) -> None:
    for since, seconds in latencies:
        _child(metrics.ASSIGNMENT_LATENCY, since).observe(seconds)


# A metric's child per label value, kept for the process (labels() takes a lock and builds a key each call: ~5 us,
# a few times every poll); the children live as long as their metric, which nothing here clears.
_CHILDREN: dict[tuple[int, str], Any] = {}


def _child(metric: Any, value: str) -> Any:
    key = (id(metric), value)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(value)
    return child
