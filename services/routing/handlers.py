"""Routing use cases: assign scored leads, run SLA clocks and escalations, record every decision."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import Row, Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from common.envelope import Event
from common.outbox import add_events
from common.topics import EVENT_TOPICS
from routing import metrics
from routing.domain import (
    DEFAULT_RULES_YAML,
    Action,
    Decision,
    EscalationPolicy,
    Rep,
    RepLoad,
    RosterError,
    RoutingRules,
    RulesError,
    SlaPolicy,
    Team,
    default_sla_policies,
    load_rules,
    manager_for,
    parse_reps,
    queue_policy,
    sla_deadline,
    sla_policy_for,
    warning_times,
    working_minutes_between,
)
from routing.domain.accounts import Account, AccountBook, lead_match_keys
from routing.domain.hours import zone
from routing.domain.rules import quality_view, score_view
from routing.domain.sla import ResolvedSla, default_ladder, is_hotter, resolve_sla
from routing.settings import RoutingSettings
from routing.store import (
    ESCALATE,
    AssignmentRow,
    ErasedLead,
    LeadRow,
    RepLoadRow,
    RepRow,
    RotationRow,
    RoutingRepository,
    RulesetRow,
    SlaTimer,
    TeamRow,
    TimelineRow,
    outbox,
)
from routing.webhooks import enqueue_deliveries, redact_deliveries, redact_resubmission_deliveries

log = structlog.get_logger(__name__)
EVENT_SOURCE = "/handoff/routing"
COMPILED_RULES = 16  # rule texts kept compiled: the active ones and recent simulate/backtest candidates
_ROSTER = "routing_roster"  # session.info key: the roster this transaction reads
_TX = "routing_tx"  # session.info key: what this transaction has read once and keeps current in memory
OPEN_STATUSES = ("assigned", "queued", "held", "touched", "accepted")
# A lead in these is closed to repeats (erased leads too): the next submission of the person is a new lead.
CLOSED_STATUSES = ("converted", "disqualified", "merged")
# What a repeat submission says that its open lead's timeline and lead.resubmitted carry.
RESUBMISSION_FIELDS = ("message", "form_id", "page_url", "referrer", "utm", "submitted_at")


def _topic(event: Event) -> str:
    return EVENT_TOPICS[event.type]


def aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return aware(datetime.fromisoformat(str(value)))
    except ValueError:
        return None


@dataclass(frozen=True)
class Roster:
    version: int
    teams: list[Team]
    reps: list[Rep]

    def rep(self, rep_id: str | None) -> Rep | None:
        return next((r for r in self.reps if r.id == rep_id), None) if rep_id else None

    def team(self, team_id: str | None) -> Team | None:
        return next((t for t in self.teams if t.id == team_id), None) if team_id else None


@dataclass
class _TxState:
    """Rows a transaction reads once and then keeps current itself: within a transaction that holds the routing
    lock nobody else writes them, so re-reading them for every lead of a consumer batch would only cost time."""

    transaction: Any
    locked: bool = False
    loads: dict[str, RepLoadRow] | None = None
    rotation: list[RotationRow] | None = None
    accounts: dict[str, tuple[Account, ...]] = field(default_factory=dict)
    routed: set[str] = field(default_factory=set)  # leads routed in this transaction, not yet flushed


def _tx(session: AsyncSession) -> _TxState:
    """This transaction's cache; a rolled-back or new transaction starts from an empty one."""
    current = session.sync_session.get_transaction()
    state: _TxState | None = session.info.get(_TX)
    if state is None or state.transaction is not current:
        state = _TxState(current)
        session.info[_TX] = state
    return state


async def _next_assignment_id(session: AsyncSession) -> int:
    """Taken from the database's counter before the row is flushed, so a consumer batch needs no flush per decision
    (the timers, timeline and event all carry the id); distinct without relying on the routing lock."""
    return await RoutingRepository(session).next_assignment_id()


async def _lock(session: AsyncSession) -> None:
    """Take the routing lock once per transaction (it is held until the commit)."""
    state = _tx(session)
    if not state.locked:
        await RoutingRepository(session).lock_routing()
        state.locked = True


async def _loads(session: AsyncSession) -> dict[str, RepLoadRow]:
    state = _tx(session)
    if state.loads is None:
        state.loads = await RoutingRepository(session).loads()
    return state.loads


async def _rotation_rows(session: AsyncSession) -> list[RotationRow]:
    state = _tx(session)
    if state.rotation is None:
        state.rotation = await RoutingRepository(session).rotation_rows()
    return state.rotation


async def _account_book(session: AsyncSession, view: Mapping[str, Any]) -> AccountBook:
    """The accounts this lead could match (its domains, their parents, its company name), cached per transaction."""
    domains, names = lead_match_keys(view)
    keys = domains + [f"name:{n}" for n in names]
    cache = _tx(session).accounts
    missing = [k for k in keys if k not in cache]
    if missing:
        found: dict[str, list[Account]] = {k: [] for k in missing}
        rows = await RoutingRepository(session).account_candidates(
            [k for k in missing if not k.startswith("name:")],
            [k.removeprefix("name:") for k in missing if k.startswith("name:")],
        )
        for row in rows:
            for key in (row.domain, f"name:{row.name_key}"):
                if key in found:
                    found[key].append(row.to_account())
        cache.update({k: tuple(v) for k, v in found.items()})
    return AccountBook.of(a for k in keys for a in cache[k])


class _LeadFacts(Protocol):
    """What an SLA notice reads of a lead: a LeadRow, or a row of RoutingRepository.clock_facts."""

    lead_id: str
    grade: str | None
    source_kind: str | None


class _ClockFacts(Protocol):
    """What an SLA notice reads of the running assignment: an AssignmentRow, or a row of clock_facts."""

    id: int
    rep_id: str | None
    team_id: str | None
    sla_policy: str | None
    sla_due_at: datetime | None


class _TimerFacts(Protocol):
    id: int
    fraction: float | None
    due_at: datetime


class Router:
    """One per process: caches the parsed roster and rules by version; every write goes through a session."""

    def __init__(self, settings: RoutingSettings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.clock = clock
        self._roster: Roster | None = None
        self._rules: OrderedDict[str, RoutingRules] = OrderedDict()
        self._active: tuple[int, RoutingRules] | None = None
        policies = default_sla_policies()
        for grade, minutes in settings.sla_minutes.items():
            key = "queue" if grade.lower() == "queue" else grade.upper()
            base = policies.get(key) or policies["queue"]
            policies[key] = SlaPolicy(
                base.grade,
                minutes,
                settings.sla_business_hours,
                tuple(settings.sla_warn_fractions),
            )
        for grade, policy in list(policies.items()):
            policies[grade] = SlaPolicy(
                policy.grade,
                policy.minutes,
                settings.sla_business_hours and policy.business_hours,
                tuple(settings.sla_warn_fractions),
            )
        self.sla_policies = policies
        self.escalation = EscalationPolicy(settings.escalation_max_reassignments, settings.escalation_then)
        # The environment's ladder: the default under teams' and rules' `sla:` blocks.
        self.ladder = default_ladder(self.escalation)
        self.on_timer_written: Callable[[datetime], None] = lambda _due: None

    # -- roster and rules -----------------------------------------------------------------------------------------

    async def roster(self, session: AsyncSession) -> Roster:
        """The parsed roster at the stored version, read once per transaction and parsed once per version."""
        cached = session.info.get(_ROSTER)
        if cached is not None:
            return cached
        repo = RoutingRepository(session)
        version = await repo.roster_version()
        if self._roster is None or self._roster.version != version:
            teams = [row.data for row in await repo.teams()]
            reps = [row.data for row in await repo.reps()]
            parsed_teams, parsed_reps = parse_reps({"teams": teams, "reps": reps})
            self._roster = Roster(version, parsed_teams, parsed_reps)
        session.info[_ROSTER] = self._roster
        return self._roster

    def parse_rules(self, text: str) -> RoutingRules:
        """Validate and compile rules text (raises RulesError); the last few are kept compiled, by text."""
        rules = self._rules.get(text)
        if rules is None:
            rules = load_rules(text)
            self._rules[text] = rules
            # simulate and backtest may try a new candidate per request: keep only the most recent ones.
            while len(self._rules) > COMPILED_RULES:
                self._rules.popitem(last=False)
        self._rules.move_to_end(text)
        return rules

    async def rules(self, session: AsyncSession) -> RoutingRules:
        """The active rules; activating rules bumps the roster version, so that version keys this cache too."""
        version = (await self.roster(session)).version
        if self._active is not None and self._active[0] == version:
            return self._active[1]
        row = await RoutingRepository(session).active_ruleset()
        rules = self.parse_rules(row.source_text if row else DEFAULT_RULES_YAML)
        self._active = (version, rules)
        return rules

    async def install_rules(self, session: AsyncSession, text: str) -> RoutingRules:
        """Validate (RulesError leaves the old rules in force), check against the roster, activate."""
        rules = self.parse_rules(text)
        await _lock(session)
        roster = await self.roster(session)
        problems = roster_problems(rules, roster)
        if problems:
            raise RulesError(problems)
        existing = await session.get(RulesetRow, rules.version)
        from sqlalchemy import update

        await session.execute(update(RulesetRow).values(active=False))
        if existing is None:
            session.add(RulesetRow(version=rules.version, source_text=text, active=True, created_at=self.clock()))
        else:
            existing.active = True
        await RoutingRepository(session).bump_roster_version()  # every process picks the new rules up
        session.info.pop(_ROSTER, None)
        await session.flush()
        return rules

    async def replace_roster(self, session: AsyncSession, data: Mapping[str, Any]) -> Roster:
        """Load teams, reps and accounts from a seed mapping (validated as a whole first)."""
        await _lock(session)
        _, reps = parse_reps({"teams": data.get("teams") or [], "reps": data.get("reps") or []})
        known = {rep.id for rep in reps} | {row.id for row in await RoutingRepository(session).reps()}
        problems = account_problems(data.get("accounts"), known)
        if problems:
            raise RosterError(problems)
        now = self.clock()
        for raw in data.get("teams") or []:
            team_row = await session.get(TeamRow, raw["id"])
            if team_row is None:
                session.add(TeamRow(id=raw["id"], data=dict(raw), updated_at=now))
            else:
                team_row.data, team_row.updated_at = dict(raw), now
        for raw in data.get("reps") or []:
            rep_row = await session.get(RepRow, raw["id"])
            if rep_row is None:
                session.add(RepRow(id=raw["id"], data=dict(raw), updated_at=now))
            else:
                rep_row.data, rep_row.updated_at = dict(raw), now
        repo = RoutingRepository(session)
        for raw in data.get("accounts") or []:
            domains = [d.lower() for d in raw.get("domains") or [raw.get("domain")] if d]
            await repo.save_account(str(raw.get("id") or domains[0]), raw["owner"], raw.get("name"), domains)
        await RoutingRepository(session).bump_roster_version()
        session.info.pop(_ROSTER, None)
        _tx(session).accounts.clear()
        await session.flush()
        return await self.roster(session)

    # -- assignment -----------------------------------------------------------------------------------------------

    async def on_scored(self, session: AsyncSession, event: Event) -> None:
        """lead.scored -> one routing decision, stored with its reasons, its SLA clock and lead.assigned."""
        repo = RoutingRepository(session)
        lead_id = event.subject
        if lead_id in _tx(session).routed:
            return  # routed already in this very batch (a re-published score): a lead is assigned once
        routed, erased = await repo.seen(lead_id)
        if routed:
            return
        data = event.data
        enrichment = dict(data.get("enrichment") or {})
        view: dict[str, Any] = {
            "lead": {} if erased else dict(data.get("lead") or {}),
            "enrichment": anonymous_enrichment(enrichment) if erased else enrichment,
            "score": score_view(data),
            "source": dict(data.get("source") or {}),
            "is_test": bool(data.get("is_test")),
            "duplicate_of": data.get("duplicate_of"),
            "quality": quality_view(data),
        }
        now = self.clock()
        thread_id = lead_id
        if view["duplicate_of"]:
            thread_id = await self._thread_of(session, str(view["duplicate_of"]))
            # The same lock the assign path takes, before the open lead is read: two routing processes never both
            # join a repeat and route the lead it joins (the database's one-current-assignment index holds too).
            await _lock(session)
            open_lead = await repo.open_lead_in_thread(thread_id, CLOSED_STATUSES)
            if open_lead is not None:
                _tx(session).routed.add(lead_id)
                await self.join_open_lead(session, open_lead, lead_id, thread_id, view, event, now, erased=erased)
                return
        lead = LeadRow(
            lead_id=lead_id,
            status="new",
            grade=view["score"].get("grade"),
            source_kind=view["source"].get("kind"),
            source_id=view["source"].get("id"),
            duplicate_of=view["duplicate_of"],
            is_test=view["is_test"],
            view=view,
            received_at=_parse_time(data.get("received_at")),
            submitted_at=_parse_time((data.get("lead") or {}).get("submitted_at")),
            routed_at=now,
            reassignments=0,
            erased_at=now if erased else None,
            thread_id=thread_id,
        )
        session.add(lead)  # inserted with the assignment, already carrying its outcome
        _tx(session).routed.add(lead_id)
        # What ingest kept but could not read (phone_unparsed, ...) shows on the first timeline entry, for the rep.
        flags = view["quality"].get("flags")
        note = {"quality_flags": flags} if flags else None
        await self.assign(
            session, lead, now=now, correlation_id=event.correlation_id, event_type="lead.assigned", note=note
        )
        _record_latency(session, lead, now)

    async def _thread_of(self, session: AsyncSession, original_id: str) -> str:
        """The person's thread a repeat belongs to: its original's (ingest names the first lead in its window,
        which may itself be a repeat of an earlier one), or the original's id when routing has not seen it."""
        await session.flush()  # an original routed earlier in this consumer batch is found
        original = await RoutingRepository(session).lead(original_id)
        if original is None:
            return original_id
        return original.thread_id or original.duplicate_of or original.lead_id

    async def join_open_lead(
        self,
        session: AsyncSession,
        lead: LeadRow,
        repeat_id: str,
        thread_id: str,
        view: dict[str, Any],
        event: Event,
        now: datetime,
        *,
        erased: bool,
    ) -> None:
        """A repeat while the person's lead is open: recorded on that lead (lead.resubmitted, a timeline entry, the
        hotter grade) with its rep and clock kept, or the clock tightened; the repeat is merged, never assigned."""
        repo = RoutingRepository(session)
        await self._escalate_pending(session, lead, now)  # a breach detected before the repeat came happened first
        current = await repo.current_assignment(lead.lead_id)
        grade = view["score"].get("grade")
        previous_grade = lead.grade
        raised = is_hotter(grade, previous_grade)
        if raised:
            lead.grade = grade
        previous_due = aware(current.sla_due_at) if current else None
        tightened = await self.tighten_clock(session, lead, current, grade, now) if current else None
        rerouted = False
        if raised and current is not None and lead.status == "nurture":
            # A nurture lead has no rep and no clock to keep: hotter intent routes it again, on the new score.
            lead.view = {**(lead.view or {}), "score": view["score"]}
            current = await self.assign(
                session,
                lead,
                now=now,
                correlation_id=event.correlation_id,
                event_type="lead.reassigned",
                previous=current,
                end_reason="resubmitted",
            )
            rerouted = True
        session.add(
            LeadRow(
                lead_id=repeat_id,
                status="merged",
                current_rep_id=lead.current_rep_id,
                team_id=lead.team_id,
                grade=grade,
                source_kind=view["source"].get("kind"),
                source_id=view["source"].get("id"),
                duplicate_of=view["duplicate_of"],
                is_test=view["is_test"],
                view=view,
                received_at=_parse_time(event.data.get("received_at")),
                submitted_at=_parse_time(view["lead"].get("submitted_at")),
                routed_at=now,
                reassignments=0,
                erased_at=now if erased else None,
                thread_id=thread_id,
                merged_into=lead.lead_id,
            )
        )
        due = aware(current.sla_due_at) if current else None
        data: dict[str, Any] = {
            "lead_id": lead.lead_id,
            "repeat_lead_id": repeat_id,
            "received_at": event.data.get("received_at"),
            "resubmitted_at": now.isoformat(),
            "grade": grade,
            "previous_grade": previous_grade,
            "grade_raised": raised,
            "score": view["score"],
            # What the person said and where this time: personal data, emptied when either lead is erased.
            "lead": {k: view["lead"][k] for k in RESUBMISSION_FIELDS if view["lead"].get(k) is not None},
            "source": view["source"] or None,
            "quality": view["quality"] or None,
            "status": lead.status,
            "rep_id": lead.current_rep_id,
            "team_id": lead.team_id,
            "assignment_id": current.id if current else None,
            "sla_due_at": due.isoformat() if due else None,
            "previous_sla_due_at": previous_due.isoformat() if previous_due else None,
            "clock_tightened": tightened is not None,
            "rerouted": rerouted,
        }
        session.add(TimelineRow(lead_id=lead.lead_id, at=now, kind="resubmitted", detail=data))
        session.add(TimelineRow(lead_id=repeat_id, at=now, kind="merged", detail={"merged_into": lead.lead_id}))
        metrics.record(session, metrics.LEADS_ASSIGNED.labels(outcome="merged").inc)
        await self._emit(session, "lead.resubmitted", lead.lead_id, data, now, event.correlation_id)

    async def tighten_clock(
        self, session: AsyncSession, lead: LeadRow, current: AssignmentRow, grade: str | None, now: datetime
    ) -> datetime | None:
        """Tighten a running first-contact clock to `grade`'s SLA started now, if that would end sooner; the
        timers (warnings and the breach) move with it. Returns the new due time, or None when the clock stays.

        One place for the rule so SLA policies can change how the new clock is computed without touching callers.
        A cooler grade never tightens, even where its own SLA is shorter (D's hour beside C's business day).
        """
        running = aware(current.sla_due_at)
        if running is None or lead.first_touch_at is not None or current.outcome != "assigned":
            return None  # no clock runs (nurture, held, touched); a queue's clock is the team's, not the grade's
        if is_hotter(lead.grade, grade):
            return None
        roster = await self.roster(session)
        # The hotter grade's clock under the policy this assignment runs on: its rule's block, its team's, defaults.
        rule, team = (await self.rules(session)).rule(current.rule_id), roster.team(current.team_id)
        policy = resolve_sla(
            grade,
            rule_block=rule.sla if rule else None,
            team_block=team.sla if team else None,
            defaults=self.sla_policies,
            ladder=self.ladder,
            rule_id=current.rule_id,
            team_id=current.team_id,
        ).policy
        rep = roster.rep(current.rep_id)
        hours, tz = _clock_of(rep, roster.team(current.team_id))
        due = sla_deadline(now, policy.minutes, business_hours=policy.business_hours, hours=hours, tz=tz)
        if due >= running:
            return None
        for timer in await RoutingRepository(session).pending_timers(current.id):
            if timer.kind in ("warning", "breach"):
                timer.fired_at, timer.cancelled = now, True
        current.sla_due_at = due
        current.sla_policy, current.sla_minutes = policy.grade, policy.minutes
        current.sla_business_hours = policy.business_hours
        self._schedule_clock(session, lead.lead_id, current.id, policy, now, due, hours, tz)
        return due

    async def assign(
        self,
        session: AsyncSession,
        lead: LeadRow,
        *,
        now: datetime,
        correlation_id: str | None,
        event_type: str,
        exclude: frozenset[str] = frozenset(),
        previous: AssignmentRow | None = None,
        end_reason: str | None = None,
        forced: Decision | None = None,
        note: Mapping[str, Any] | None = None,
        sla: ResolvedSla | None = None,
    ) -> AssignmentRow:
        """Decide, persist the decision with rotation and load in this transaction, start the clock, emit.

        `sla` is the policy an escalation carries on (its ladder and the step's clock); else it is resolved from
        the matched rule's `sla:` block, the team's, then the environment defaults."""
        await _lock(session)
        roster = await self.roster(session)
        # Held by the transaction's cache on purpose: the session's identity map keeps rows only weakly, and
        # the writes below update these very rows (without it every update would read its row again).
        load_rows = await _loads(session)
        rotation_rows = await _rotation_rows(session)
        if forced is not None:
            decision = forced
        else:
            decision = await self._decide(
                session,
                lead.view or {},
                await self.rules(session),
                now=now,
                exclude=exclude,
                load_rows=load_rows,
                rotation=_rotation_state(rotation_rows),
            )
        if previous is not None:
            previous.ended_at = now
            previous.end_reason = end_reason
            if previous.rep_id:
                await _adjust_load(session, previous.rep_id, open_delta=-1, day=None)
            await session.flush()  # the old assignment ends before the new one starts (unique current index)
        await _save_rotation(session, rotation_rows, decision.rotation)
        resolved = self._resolve_sla(decision, roster, lead.grade, rules=await self.rules(session), carried=sla)
        policy = resolved.policy if resolved else None
        rep = roster.rep(decision.rep_id)
        due = None
        if policy is not None and decision.outcome in ("assigned", "queued"):
            hours, tz = _clock_of(rep, roster.team(decision.team_id))
            due = sla_deadline(now, policy.minutes, business_hours=policy.business_hours, hours=hours, tz=tz)
        attempt = (previous.attempt + 1) if previous else 1
        assignment = AssignmentRow(
            id=await _next_assignment_id(session),
            lead_id=lead.lead_id,
            outcome=decision.outcome,
            rep_id=decision.rep_id,
            team_id=decision.team_id,
            rule_id=decision.rule_id,
            ruleset_version=decision.ruleset_version,
            method=decision.method,
            reason=decision.reason,
            # The policy is kept with the assignment: its ladder and follow-up outlive a change of rules.
            decision={**decision.to_dict(), "sla": resolved.to_dict() if resolved and due else None},
            attempt=attempt,
            assigned_at=now,
            sla_policy=policy.grade if policy and due else None,
            sla_minutes=policy.minutes if policy and due else None,
            sla_business_hours=policy.business_hours if policy and due else None,
            sla_due_at=due,
        )
        session.add(assignment)
        lead.status = decision.outcome
        lead.current_rep_id = decision.rep_id
        lead.team_id = decision.team_id
        if decision.rep_id:
            day = _local_day(now, rep.timezone) if rep else None
            await _adjust_load(session, decision.rep_id, open_delta=1, day=day)
        await self._start_clock(session, lead, assignment, policy, rep, roster, decision, now)
        session.add(
            TimelineRow(
                lead_id=lead.lead_id,
                at=now,
                kind=event_type.removeprefix("lead."),
                detail={
                    "assignment_id": assignment.id,
                    "attempt": attempt,
                    "outcome": decision.outcome,
                    "rep_id": decision.rep_id,
                    "team_id": decision.team_id,
                    "rule_id": decision.rule_id,
                    "ruleset_version": decision.ruleset_version,
                    "reason": decision.reason,
                    "previous_rep_id": previous.rep_id if previous else None,
                    "end_reason": end_reason,
                    "sla_due_at": due.isoformat() if due else None,
                    "candidates": [c.to_dict() for c in decision.candidates],
                    **(note or {}),
                },
            )
        )
        metrics.record(session, metrics.LEADS_ASSIGNED.labels(outcome=decision.outcome).inc)
        event = Event(
            type=event_type,
            source=EVENT_SOURCE,
            subject=lead.lead_id,
            time=now,
            correlation_id=correlation_id,
            data=self._assignment_data(lead, assignment, decision, rep, previous, end_reason),
        )
        # The rows go in with the commit's flush, batched across a consumer batch.
        await self._publish(session, [event])
        return assignment

    def _policy_for(self, decision: Decision, roster: Roster, grade: str | None) -> SlaPolicy | None:
        resolved = self._resolve_sla(decision, roster, grade)
        return resolved.policy if resolved else None

    def _resolve_sla(
        self,
        decision: Decision,
        roster: Roster,
        grade: str | None,
        *,
        rules: RoutingRules | None = None,
        carried: ResolvedSla | None = None,
    ) -> ResolvedSla | None:
        """The SLA policy of a decision: the matched rule's block, the team's, the defaults (field by field); a
        queued lead runs on its team's queue clock. None when no clock runs (nurture, held)."""
        if decision.outcome not in ("assigned", "queued"):
            return None
        team = roster.team(decision.team_id)
        queue = None
        if decision.outcome == "queued":
            queue = queue_policy(team) if team else sla_policy_for(None, queued=True, policies=self.sla_policies)
        if carried is not None:
            if queue is None:
                return carried
            return ResolvedSla(queue, carried.escalation, carried.follow_up, "team_queue")
        rule = rules.rule(decision.rule_id) if rules is not None else None
        return resolve_sla(
            grade,
            rule_block=rule.sla if rule else None,
            team_block=team.sla if team else None,
            defaults=self.sla_policies,
            ladder=self.ladder,
            rule_id=decision.rule_id,
            team_id=decision.team_id,
            queue=queue,
        )

    async def preview_sla(
        self, session: AsyncSession, decision: Decision, rules: RoutingRules, grade: str | None, now: datetime
    ) -> dict[str, Any] | None:
        """The SLA policy a decision would start (minutes, due time, warnings, ladder, follow-up, where from)."""
        roster = await self.roster(session)
        resolved = self._resolve_sla(decision, roster, grade, rules=rules)
        if resolved is None:
            return None
        policy = resolved.policy
        hours, tz = _clock_of(roster.rep(decision.rep_id), roster.team(decision.team_id))
        due = sla_deadline(now, policy.minutes, business_hours=policy.business_hours, hours=hours, tz=tz)
        return {**resolved.to_dict(), "due_at": due.isoformat()}

    async def _start_clock(
        self,
        session: AsyncSession,
        lead: LeadRow,
        assignment: AssignmentRow,
        policy: SlaPolicy | None,
        rep: Rep | None,
        roster: Roster,
        decision: Decision,
        now: datetime,
    ) -> None:
        if decision.outcome == "held" and decision.hold_until:
            session.add(
                SlaTimer(lead_id=lead.lead_id, assignment_id=assignment.id, kind="hold", due_at=decision.hold_until)
            )
            self.on_timer_written(decision.hold_until)
            return
        due = aware(assignment.sla_due_at)
        if policy is None or due is None:
            return
        hours, tz = _clock_of(rep, roster.team(decision.team_id))
        self._schedule_clock(session, lead.lead_id, assignment.id, policy, now, due, hours, tz)

    def _schedule_clock(
        self,
        session: AsyncSession,
        lead_id: str,
        assignment_id: int,
        policy: SlaPolicy,
        start: datetime,
        due: datetime,
        hours: Any,
        tz: str,
    ) -> None:
        """The clock's timers: a warning at each of the policy's points between start and due, the breach at due."""
        for fraction, at in zip(
            policy.warn_at,
            warning_times(start, due, policy.warn_at, business_hours=policy.business_hours, hours=hours, tz=tz),
            strict=False,
        ):
            session.add(
                SlaTimer(lead_id=lead_id, assignment_id=assignment_id, kind="warning", fraction=fraction, due_at=at)
            )
        session.add(SlaTimer(lead_id=lead_id, assignment_id=assignment_id, kind="breach", due_at=due))
        self.on_timer_written(start if policy.warn_at else due)

    def _assignment_data(
        self,
        lead: LeadRow,
        assignment: AssignmentRow,
        decision: Decision,
        rep: Rep | None,
        previous: AssignmentRow | None,
        end_reason: str | None,
    ) -> dict[str, Any]:
        view = lead.view or {}
        return {
            "lead_id": lead.lead_id,
            "assignment_id": assignment.id,
            "attempt": assignment.attempt,
            "outcome": decision.outcome,
            "rep": {"id": rep.id, "name": rep.name, "email": rep.email} if rep else None,
            "team_id": decision.team_id,
            "rule_id": decision.rule_id,
            "ruleset_version": decision.ruleset_version,
            "method": decision.method,
            "reason": decision.reason,
            "candidates": [c.to_dict() for c in decision.candidates],
            "hold_until": decision.hold_until.isoformat() if decision.hold_until else None,
            "assigned_at": aware(assignment.assigned_at).isoformat(),  # type: ignore[union-attr]
            "sla": (
                {
                    "policy": assignment.sla_policy,
                    "minutes": assignment.sla_minutes,
                    "business_hours": assignment.sla_business_hours,
                    "due_at": aware(assignment.sla_due_at).isoformat(),  # type: ignore[union-attr]
                }
                if assignment.sla_due_at
                else None
            ),
            "previous_rep_id": previous.rep_id if previous else None,
            "reassign_reason": end_reason,
            "match": decision.account.to_dict() if decision.account else None,
            "source": view.get("source"),
            "is_test": lead.is_test,
            "duplicate_of": lead.duplicate_of,
            "received_at": aware(lead.received_at).isoformat() if lead.received_at else None,  # type: ignore[union-attr]
            "lead": view.get("lead"),
            "score": view.get("score"),
        }

    # -- SLA timers -----------------------------------------------------------------------------------------------

    async def fire_due_timers(self, session: AsyncSession, now: datetime, limit: int) -> int:
        """Detect what is due and make the escalations it calls for, all in this transaction; returns how many
        timers were due (the timer loop uses detect_due_timers and escalate_due in separate transactions)."""
        fired = await self.detect_due_timers(session, now, limit)
        while await self.escalate_due(session, now, limit):
            pass
        return fired

    async def detect_due_timers(self, session: AsyncSession, now: datetime, limit: int) -> int:
        """Fire what is due: warnings, breaches and holds (then route again). A breach is recorded and leaves a
        durable escalation marker, so the slow part (a reassignment) never holds back the next breach's
        detection. Returns how many timers fired."""
        repo = RoutingRepository(session)
        next_due = aware(await repo.next_due())
        if next_due is None or next_due > now:
            return 0  # the idle path takes no lock
        # Every writer takes the routing lock before any row lock (here: before claiming timers), so a rep's
        # touch and a breach firing at the same moment serialize instead of deadlocking on each other's rows.
        await _lock(session)
        # The lock may have been waited for (another process's batch): fire, and report lateness, as of now.
        now = max(now, self.clock())
        timers = await repo.claim_due_timers(now, limit)
        if not timers:
            return 0
        facts = await repo.clock_facts({timer.lead_id for timer in timers})
        # A burst fires thousands of timers in the same second: they are claimed, and their notices, timeline
        # rows and escalation markers written, with one statement each per batch, never one per timer.
        notices: list[Event] = []
        markers: list[dict[str, Any]] = []
        lateness: list[float] = []
        cancelled: list[int] = []
        holds: list[Row[Any]] = []
        # What each first-contact breach calls for: its ladder's next step (a notify step names the manager).
        breached = [facts[t.lead_id] for t in timers if t.kind == "breach" and t.lead_id in facts]
        steps = await self._breach_steps(session, breached, now)
        for timer in timers:
            clock = facts.get(timer.lead_id)
            if clock is None or clock.id != timer.assignment_id:
                cancelled.append(timer.id)  # the lead moved on (touched, reassigned): this clock no longer runs
                continue
            lateness.append(max(0.0, (now - (aware(timer.due_at) or now)).total_seconds()))
            team = metrics.team_label(clock.team_id)
            if timer.kind == "hold":
                holds.append(timer)
            elif timer.kind == "warning":
                metrics.record(session, metrics.SLA_WARNINGS.labels(team=team).inc)
                notices.append(self._sla_event("lead.sla_warning", clock, clock, timer, now))
            elif timer.kind == "follow_up":
                # Touches missing after the first one: reported, never escalated (the rep is working the lead).
                metrics.record(session, metrics.SLA_BREACHES.labels(team=team).inc)
                notices.append(self._sla_event("lead.sla_breached", clock, clock, timer, now, clock_kind="follow_up"))
            else:
                metrics.record(session, metrics.SLA_BREACHES.labels(team=team).inc)
                step, manager_id = steps.get(clock.id, (None, None))
                notices.append(
                    self._sla_event("lead.sla_breached", clock, clock, timer, now, step=step, manager_id=manager_id)
                )
                if step is None:
                    continue  # an empty ladder: the breach is reported and the rep keeps the lead
                # Due at detection: its lateness when claimed is the escalation's own delay.
                markers.append({"lead_id": clock.lead_id, "assignment_id": clock.id, "kind": ESCALATE, "due_at": now})
        await repo.cancel_timers(cancelled)
        if lateness:
            metrics.record(session, partial(_observe_all, metrics.SLA_TIMER_LATENESS, lateness))
        await self._emit_sla(session, notices)
        if markers:
            await session.execute(insert(cast(Table, SlaTimer.__table__)), markers)
            self.on_timer_written(now)
        if holds:
            await self._end_holds(session, holds, now)
        await session.flush()
        return len(timers)

    async def _end_holds(self, session: AsyncSession, holds: Sequence[Row[Any]], now: datetime) -> None:
        """A lead held for its rep's working hours is routed again when the hold ends."""
        repo = RoutingRepository(session)
        lead_ids = {timer.lead_id for timer in holds}
        currents = await repo.current_assignments(lead_ids)
        leads = await repo.leads(lead_ids)
        for timer in holds:
            lead, current = leads.get(timer.lead_id), currents.get(timer.lead_id)
            if lead is None or current is None:
                continue
            currents[lead.lead_id] = await self.assign(
                session,
                lead,
                now=now,
                correlation_id=None,
                event_type="lead.assigned",
                previous=current,
                end_reason="hold_ended",
            )

    async def escalate_due(self, session: AsyncSession, now: datetime, limit: int) -> int:
        """Make the reassignments of detected breaches, each once: a marker is claimed and fired in the
        transaction that escalates, so a crash retries it and two processes never both take it."""
        repo = RoutingRepository(session)
        if not await repo.escalation_due(max(now, self.clock())):
            return 0  # nothing waits: take no lock
        await _lock(session)
        now = max(now, self.clock())
        markers = await repo.due_timers(now, limit, escalations=True)
        if not markers:
            return 0
        lead_ids = {marker.lead_id for marker in markers}
        currents = await repo.current_assignments(lead_ids)
        leads = await repo.leads(lead_ids)
        for marker in markers:
            await self._escalate_marker(session, marker, leads.get(marker.lead_id), currents, now)
        await session.flush()
        return len(markers)

    async def _escalate_marker(
        self,
        session: AsyncSession,
        marker: SlaTimer,
        lead: LeadRow | None,
        currents: dict[str, AssignmentRow],
        now: datetime,
    ) -> None:
        marker.fired_at = now
        current = currents.get(marker.lead_id)
        if lead is None or current is None or current.id != marker.assignment_id:
            marker.cancelled = True  # the lead moved on before the escalation (a manual reassignment)
            return
        detected = aware(marker.due_at) or now
        late_ms = max(0, round((now - detected).total_seconds() * 1000))
        note = {"breach_detected_at": detected.isoformat(), "escalation_late_ms": late_ms}
        currents[lead.lead_id] = await self.escalate(session, lead, current, now, note=note)

    async def _escalate_pending(self, session: AsyncSession, lead: LeadRow, now: datetime) -> None:
        """A breach detected but not yet escalated happened first: escalate before anything else changes the lead."""
        markers = await RoutingRepository(session).pending_escalations(lead.lead_id)
        if not markers:
            return
        currents = await RoutingRepository(session).current_assignments({lead.lead_id})
        for marker in markers:
            await self._escalate_marker(session, marker, lead, currents, now)
        await session.flush()

    async def _breach_steps(
        self, session: AsyncSession, clocks: Sequence[Any], now: datetime
    ) -> dict[int, tuple[str | None, str | None]]:
        """By assignment id: the ladder step each breach calls for, and for a notify_manager step the manager."""
        if not clocks:
            return {}
        facts = await RoutingRepository(session).escalation_facts([clock.id for clock in clocks])
        roster: Roster | None = None
        steps: dict[int, tuple[str | None, str | None]] = {}
        for clock in clocks:
            snapshot, taken = facts.get(clock.id, (None, 0))
            rung = self._carried_sla(snapshot, clock.grade).step_after(taken)
            manager = None
            if rung is not None and rung.step == "notify_manager" and clock.rep_id:
                roster = roster or await self.roster(session)
                manager = manager_for(clock.rep_id, roster.reps, roster.teams, now=now)
            steps[clock.id] = (rung.step if rung else None, manager)
        return steps

    def _carried_sla(self, snapshot: Any, grade: str | None) -> ResolvedSla:
        """The policy an assignment runs on: the one kept with it, else (made before policies were data) the
        environment's for the grade."""
        kept = ResolvedSla.from_dict(snapshot)
        return kept or ResolvedSla(sla_policy_for(grade, policies=self.sla_policies), self.ladder)

    def _sla_event(
        self,
        kind: str,
        lead: _LeadFacts,
        current: _ClockFacts,
        timer: _TimerFacts,
        now: datetime,
        *,
        clock_kind: str = "first_contact",
        step: str | None = None,
        manager_id: str | None = None,
    ) -> Event:
        due = aware(timer.due_at)
        assert due is not None
        detail = {
            "lead_id": lead.lead_id,
            "assignment_id": current.id,
            "rep_id": current.rep_id,
            "team_id": current.team_id,
            "grade": lead.grade,
            "source_kind": lead.source_kind,
            "policy": current.sla_policy,
            "fraction": timer.fraction,
            "due_at": due.isoformat(),
            "sla_due_at": aware(current.sla_due_at).isoformat() if current.sla_due_at else None,  # type: ignore[union-attr]
            "fired_at": now.isoformat(),
            "late_ms": max(0, round((now - due).total_seconds() * 1000)),
            "clock": clock_kind,  # first_contact, or follow_up: the touches after the first one
        }
        if kind == "lead.sla_breached":
            detail["step"] = step  # the ladder step this breach calls for (null: none, or a follow-up breach)
            detail["manager_id"] = manager_id  # who a notify_manager step tells
        return Event(type=kind, source=EVENT_SOURCE, subject=lead.lead_id, time=now, data=detail)

    async def _emit_sla(self, session: AsyncSession, events: Sequence[Event]) -> None:
        """SLA warnings and breaches: a timeline row each, the events and their webhook deliveries."""
        if not events:
            return
        await session.execute(
            insert(cast(Table, TimelineRow.__table__)),
            [
                {"lead_id": e.subject, "at": e.time, "kind": e.type.removeprefix("lead."), "detail": e.data}
                for e in events
            ],
        )
        await self._publish(session, events)

    async def escalate(
        self,
        session: AsyncSession,
        lead: LeadRow,
        current: AssignmentRow,
        now: datetime,
        *,
        note: Mapping[str, Any] | None = None,
    ) -> AssignmentRow:
        """The ladder's next step (the assignment's policy, else the environment's): reassign to the next eligible
        rep, notify the manager and keep the rep, hand the lead to the manager, or send it to the team queue; each
        starts the step's own clock. `lead.reassignments` counts the steps taken, a notify step included."""
        repo = RoutingRepository(session)
        carried = self._carried_sla((current.decision or {}).get("sla"), lead.grade)
        rung = carried.step_after(lead.reassignments)
        if rung is None:
            return current  # an empty ladder: nothing to do beyond the breach already reported
        step = rung.step
        carried = carried.for_step(rung)
        if step == "notify_manager":
            return await self._notify_manager(session, lead, current, carried, now, note=note)
        tried = frozenset(a.rep_id for a in await repo.assignments(lead.lead_id) if a.rep_id)
        forced: Decision | None = None
        if step == "manager" and current.rep_id:
            roster = await self.roster(session)
            manager = manager_for(current.rep_id, roster.reps, roster.teams, now=now)
            if manager:
                forced = Decision(
                    outcome="assigned",
                    rep_id=manager,
                    team_id=current.team_id,
                    rule_id="escalation:manager",
                    ruleset_version=current.ruleset_version,
                    method=None,
                    candidates=[],
                    reason=f"SLA missed {lead.reassignments + 1} times; escalated to the manager",
                )
            else:
                step = "queue"
        if step == "queue":
            forced = Decision(
                outcome="queued",
                rep_id=None,
                team_id=current.team_id or (await self.rules(session)).fallback_team,
                rule_id="escalation:queue",
                ruleset_version=current.ruleset_version,
                method=None,
                candidates=[],
                reason="SLA missed and no one left to escalate to; the lead waits in the team queue",
            )
        lead.reassignments += 1
        return await self.assign(
            session,
            lead,
            now=now,
            correlation_id=None,
            event_type="lead.reassigned",
            exclude=tried,
            previous=current,
            end_reason="sla_breach",
            forced=forced,
            note=note,
            # A queued lead picked up again gets its own policy afresh; otherwise the ladder carries on.
            sla=None if current.outcome == "queued" else carried,
        )

    async def _notify_manager(
        self,
        session: AsyncSession,
        lead: LeadRow,
        current: AssignmentRow,
        sla: ResolvedSla,
        now: datetime,
        *,
        note: Mapping[str, Any] | None = None,
    ) -> AssignmentRow:
        """A notify_manager step: the breach event named the step and the manager; the rep keeps the lead and a
        new clock (the step's minutes) runs on the same assignment until the next step."""
        roster = await self.roster(session)
        manager = manager_for(current.rep_id, roster.reps, roster.teams, now=now) if current.rep_id else None
        lead.reassignments += 1  # one rung climbed, though nobody was reassigned
        hours, tz = _clock_of(roster.rep(current.rep_id), roster.team(current.team_id))
        policy = sla.policy
        due = sla_deadline(now, policy.minutes, business_hours=policy.business_hours, hours=hours, tz=tz)
        current.sla_due_at, current.sla_minutes = due, policy.minutes
        self._schedule_clock(session, lead.lead_id, current.id, policy, now, due, hours, tz)
        detail = {
            "assignment_id": current.id,
            "step": "notify_manager",
            "manager_id": manager,
            "rep_id": current.rep_id,
            "team_id": current.team_id,
            "sla_due_at": due.isoformat(),
            **(note or {}),
        }
        session.add(TimelineRow(lead_id=lead.lead_id, at=now, kind="escalated", detail=detail))
        return current

    # -- previews and rep actions ---------------------------------------------------------------------------------

    async def _decide(
        self,
        session: AsyncSession,
        view: Mapping[str, Any],
        rules: RoutingRules,
        *,
        now: datetime,
        exclude: frozenset[str] = frozenset(),
        load_rows: Mapping[str, RepLoadRow] | None = None,
        rotation: Mapping[str, Mapping[str, int]] | None = None,
    ) -> Decision:
        """The one way a decision is made, shared by assign and preview so a simulation is the real thing."""
        repo = RoutingRepository(session)
        roster = await self.roster(session)
        if load_rows is None:
            load_rows = await _loads(session)
        if rotation is None:
            rotation = _rotation_state(await _rotation_rows(session))
        loads = {rep.id: _load_of(load_rows.get(rep.id), _local_day(now, rep.timezone)) for rep in roster.reps}
        previous_rep = None
        if view.get("duplicate_of"):
            original = await repo.lead(str(view["duplicate_of"]))
            previous_rep = original.current_rep_id if original else None
        return _route(
            view,
            rules=rules,
            roster=roster,
            loads=loads,
            rotation=rotation,
            accounts=await _account_book(session, view),
            previous_rep=previous_rep,
            exclude=exclude,
            now=now,
        )

    async def preview(
        self, session: AsyncSession, view: Mapping[str, Any], rules: RoutingRules, *, now: datetime
    ) -> Decision:
        """The decision the router would make now, from the stored roster, loads and rotation; writes nothing."""
        return await self._decide(session, view, rules, now=now)

    async def act(
        self,
        session: AsyncSession,
        lead_id: str,
        action: str,
        *,
        rep_id: str | None,
        reason: str | None,
        correlation_id: str | None,
    ) -> dict[str, Any]:
        """A rep's action. touch stops the SLA clock; reject reroutes; convert and disqualify close the lead."""
        repo = RoutingRepository(session)
        await _lock(session)
        lead = await repo.lead(lead_id)
        if lead is None:
            raise LookupError("this lead has not been routed (yet)")
        now = self.clock()
        await self._escalate_pending(session, lead, now)
        current = await repo.current_assignment(lead_id)
        await self.roster(session)  # the touch facts read the rep's working hours from it
        actor = rep_id or (current.rep_id if current else None)
        if lead.status in ("converted", "disqualified"):
            raise ValueError(f"the lead is already {lead.status}")
        detail: dict[str, Any] = {
            "lead_id": lead_id,
            "rep_id": actor,
            "action": action,
            "at": now.isoformat(),
        }
        if action == "touch":
            if lead.first_touch_at is None:
                lead.first_touch_at = now
                await self._stop_clock(session, current, now)
                facts = self._touch_facts(lead, current, now)
                detail.update(facts)
                metrics.record(session, partial(metrics.TIME_TO_FIRST_TOUCH.observe, facts["time_to_first_touch_s"]))
                self._start_follow_up(session, lead, current, now)
            else:
                await self._count_follow_up(session, lead, current, now)
            lead.status = "touched"
        elif action == "accept":
            lead.status = "accepted"
        elif action == "reject":
            if current is None or current.rep_id is None:
                raise ValueError("the lead has no rep to reject it")
            detail["reason"] = reason
            await self._stop_clock(session, current, now)
            tried = frozenset(a.rep_id for a in await repo.assignments(lead_id) if a.rep_id)
            await self._emit(session, "lead.rejected", lead_id, detail, now, correlation_id)
            session.add(TimelineRow(lead_id=lead_id, at=now, kind="rejected", detail=detail))
            await self.assign(
                session,
                lead,
                now=now,
                correlation_id=correlation_id,
                event_type="lead.reassigned",
                exclude=tried,
                previous=current,
                end_reason="rejected",
            )
            return {"lead_id": lead_id, "status": lead.status, "rep_id": lead.current_rep_id}
        else:  # convert, disqualify: the lead leaves the rep's open load
            detail["reason"] = reason
            lead.status = "converted" if action == "convert" else "disqualified"
            await self._stop_clock(session, current, now)
            if current is not None:
                current.ended_at, current.end_reason = now, lead.status
                if current.rep_id:
                    await _adjust_load(session, current.rep_id, open_delta=-1, day=None)
        kind = {
            "touch": "lead.touched",
            "accept": "lead.accepted",
            "convert": "lead.converted",
            "disqualify": "lead.disqualified",
        }[action]
        session.add(TimelineRow(lead_id=lead_id, at=now, kind=kind.removeprefix("lead."), detail=detail))
        await self._emit(session, kind, lead_id, detail, now, correlation_id)
        await session.flush()
        return {
            "lead_id": lead_id,
            "status": lead.status,
            "rep_id": lead.current_rep_id,
            **{k: v for k, v in detail.items() if k in ("time_to_first_touch_s", "working_minutes", "within_sla")},
        }

    def _touch_facts(self, lead: LeadRow, current: AssignmentRow | None, now: datetime) -> dict[str, Any]:
        """Time to first touch, raw and in the rep's working time, and whether it beat the SLA."""
        start = aware(lead.routed_at) or now
        facts: dict[str, Any] = {"time_to_first_touch_s": round((now - start).total_seconds(), 3)}
        roster = self._roster
        rep = roster.rep(current.rep_id) if roster and current else None
        if rep is not None:
            facts["working_minutes"] = round(working_minutes_between(start, now, hours=rep.hours, tz=rep.timezone), 2)
        due = aware(current.sla_due_at) if current else None
        facts["within_sla"] = None if due is None else now <= due
        return facts

    def _start_follow_up(
        self, session: AsyncSession, lead: LeadRow, current: AssignmentRow | None, now: datetime
    ) -> None:
        """After the first touch, the policy's follow-up clock: its timer fires unless enough touches come first."""
        sla = ResolvedSla.from_dict((current.decision or {}).get("sla")) if current is not None else None
        if current is None or sla is None or sla.follow_up is None:
            return
        due = now + timedelta(hours=sla.follow_up.within_hours)
        session.add(SlaTimer(lead_id=lead.lead_id, assignment_id=current.id, kind="follow_up", due_at=due))
        self.on_timer_written(due)

    async def _count_follow_up(
        self, session: AsyncSession, lead: LeadRow, current: AssignmentRow | None, now: datetime
    ) -> None:
        """A later touch: once the follow-up's touches are all recorded (this one included), its clock stops."""
        if current is None or lead.first_touch_at is None:
            return
        sla = ResolvedSla.from_dict((current.decision or {}).get("sla"))
        repo = RoutingRepository(session)
        pending = [t for t in await repo.pending_timers(current.id) if t.kind == "follow_up"]
        if sla is None or sla.follow_up is None or not pending:
            return
        touches = await repo.count_timeline(lead.lead_id, "touched", since=aware(lead.first_touch_at) or now) + 1
        if touches >= sla.follow_up.touches:
            for timer in pending:
                timer.fired_at, timer.cancelled = now, True

    async def _stop_clock(self, session: AsyncSession, current: AssignmentRow | None, now: datetime) -> None:
        if current is None:
            return
        for timer in await RoutingRepository(session).pending_timers(current.id):
            timer.fired_at, timer.cancelled = now, True

    async def _emit(
        self,
        session: AsyncSession,
        kind: str,
        lead_id: str,
        data: dict[str, Any],
        now: datetime,
        correlation_id: str | None,
    ) -> None:
        event = Event(
            type=kind,
            source=EVENT_SOURCE,
            subject=lead_id,
            time=now,
            correlation_id=correlation_id,
            data=data,
        )
        await self._publish(session, [event])

    async def _publish(self, session: AsyncSession, events: Sequence[Event]) -> None:
        """Write events to the outbox and queue their webhook deliveries, both in the caller's transaction."""
        await add_events(session, outbox, self.settings, events, _topic)
        await enqueue_deliveries(session, events, self.clock())

    # -- erasure --------------------------------------------------------------------------------------------------

    async def on_erased(self, session: AsyncSession, event: Event) -> None:
        """Delete the personal data; the anonymous decision record (rules, candidates, times) stays."""
        now = self.clock()
        await session.flush()  # a lead routed earlier in this batch is erased too
        if await session.get(ErasedLead, event.subject) is None:
            session.add(ErasedLead(lead_id=event.subject, erased_at=now))
        lead = await RoutingRepository(session).lead(event.subject)
        if lead is not None and lead.erased_at is None:
            view = dict(lead.view or {})
            view["lead"] = {}
            view["enrichment"] = anonymous_enrichment(view.get("enrichment") or {})
            lead.view = view
            lead.erased_at = now
            session.add(TimelineRow(lead_id=lead.lead_id, at=now, kind="erased", detail={}))
        # A reject, convert or disqualify may say why in the rep's own words, which can name the person.
        for row in await RoutingRepository(session).timeline(event.subject):
            if row.kind in ("rejected", "converted", "disqualified") and (row.detail or {}).get("reason"):
                row.detail = {**row.detail, "reason": None}
            elif row.kind == "resubmitted" and (row.detail or {}).get("lead"):
                row.detail = {**row.detail, "lead": {}}  # what a repeat said, recorded on this (open) lead
        if lead is not None and lead.merged_into:
            # A repeat that joined an open lead: what it said is on that lead's timeline and webhook bodies.
            for row in await RoutingRepository(session).timeline(lead.merged_into):
                detail = row.detail or {}
                if row.kind == "resubmitted" and detail.get("repeat_lead_id") == lead.lead_id and detail.get("lead"):
                    row.detail = {**detail, "lead": {}}
            await redact_resubmission_deliveries(session, lead.merged_into, lead.lead_id)
        await redact_deliveries(session, event.subject)
        await session.flush()


def _route(
    view: Mapping[str, Any],
    *,
    rules: RoutingRules,
    roster: Roster,
    loads: Mapping[str, RepLoad],
    rotation: Mapping[str, Mapping[str, int]],
    accounts: Mapping[str, str] | AccountBook,
    previous_rep: str | None,
    exclude: frozenset[str],
    now: datetime,
) -> Decision:
    from routing.domain import route

    return route(
        view,
        rules=rules,
        teams=roster.teams,
        reps=roster.reps,
        loads=loads,
        rotation=rotation,
        accounts=accounts,
        previous_rep=previous_rep,
        exclude=exclude,
        now=now,
    )


def roster_problems(rules: RoutingRules, roster: Roster) -> list[str]:
    """Teams and reps the rules name that the roster lacks, each as 'path: problem' like the rules' own errors."""
    teams = {team.id for team in roster.teams}
    reps = {rep.id for rep in roster.reps}
    known = f"(known teams: {', '.join(sorted(teams)) or 'none'})"
    problems: list[str] = []
    if rules.fallback_team not in teams:
        problems.append(f"fallback_team: unknown team {rules.fallback_team!r} {known}")
    # load_rules keeps every rule of a valid document, in order, so the index is the document's own.
    for index, rule in enumerate(rules.rules):
        action: Action | None = rule.action
        where = f"rules[{index}].action"
        while action is not None:
            if action.team and action.team not in teams:
                problems.append(f"{where}.team: unknown team {action.team!r} {known}")
            if action.rep and action.rep not in reps:
                problems.append(f"{where}.rep: unknown rep {action.rep!r}")
            action, where = action.fallback, f"{where}.fallback"
    return problems


def account_problems(accounts: Any, rep_ids: set[str]) -> list[str]:
    """What is wrong with a roster's `accounts` list, each as 'path: problem'."""
    if accounts is None:
        return []
    if not isinstance(accounts, list):
        return ["accounts: expected a list of {name, domains, owner}"]
    problems: list[str] = []
    for index, raw in enumerate(accounts):
        where = f"accounts[{index}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected a mapping with domains and owner")
            continue
        owner = raw.get("owner")
        if not isinstance(owner, str) or owner not in rep_ids:
            problems.append(f"{where}.owner: unknown rep {owner!r}")
        domains = raw.get("domains") or [raw.get("domain")]
        if not isinstance(domains, list) or not all(isinstance(d, str) and "." in d for d in domains):
            problems.append(f"{where}.domains: expected a list of company domains like acme.com")
    return problems


def anonymous_enrichment(enrichment: Mapping[str, Any]) -> dict[str, Any]:
    """The enrichment without what can point at a person: the email's domain, provider data, the steps log."""
    kept = {k: v for k, v in enrichment.items() if k not in ("domain", "provider", "steps")}
    if isinstance(kept.get("company"), Mapping):
        kept["company"] = {k: v for k, v in kept["company"].items() if k != "domain"}
    return kept


def _rotation_state(rows: Sequence[RotationRow]) -> dict[str, dict[str, int]]:
    state: dict[str, dict[str, int]] = {}
    for row in rows:
        state.setdefault(row.team_id, {})[row.rep_id] = row.current
    return state


async def _save_rotation(
    session: AsyncSession, rows: list[RotationRow], rotation: Mapping[str, Mapping[str, int]]
) -> None:
    """Store each rotated team's new state whole: a rep the rotation dropped (left, away) loses their row,
    so they come back at the neutral position instead of with an old, stale turn."""
    existing = {(row.team_id, row.rep_id): row for row in rows}
    for team_id, state in rotation.items():
        for rep_id, current in state.items():
            row = existing.get((team_id, rep_id))
            if row is None:
                row = RotationRow(team_id=team_id, rep_id=rep_id, current=current)
                session.add(row)
                rows.append(row)
            elif row.current != current:
                row.current = current
        for (row_team, rep_id), row in existing.items():
            if row_team == team_id and rep_id not in state:
                rows.remove(row)
                if row in session.new:
                    session.expunge(row)  # added earlier in this transaction and never written
                else:
                    await session.delete(row)


def _load_of(row: RepLoadRow | None, today: str) -> RepLoad:
    if row is None:
        return RepLoad()
    return RepLoad(open_leads=row.open_leads, assigned_today=row.assigned_today if row.day == today else 0)


def _observe_all(histogram: Any, values: Sequence[float]) -> None:
    for value in values:
        histogram.observe(value)


def _record_latency(session: AsyncSession, lead: LeadRow, now: datetime) -> None:
    """Speed of the pipeline itself: source submit and Handoff receipt to the first decision."""
    for since, at in (("received", aware(lead.received_at)), ("submitted", aware(lead.submitted_at))):
        if at is not None and at <= now:
            seconds = (now - at).total_seconds()
            metrics.record(session, partial(metrics.ASSIGNMENT_LATENCY.labels(since=since).observe, seconds))


def _clock_of(rep: Rep | None, team: Team | None) -> tuple[Any, str]:
    from routing.domain import WorkingHours

    if rep is not None:
        return rep.hours, rep.timezone
    if team is not None:
        return team.hours, team.timezone
    return WorkingHours(), "UTC"


def _local_day(now: datetime, tz: str) -> str:
    return now.astimezone(zone(tz)).date().isoformat()


async def _adjust_load(session: AsyncSession, rep_id: str, *, open_delta: int, day: str | None) -> None:
    loads = await _loads(session)
    row = loads.get(rep_id)
    if row is None:
        row = RepLoadRow(rep_id=rep_id, open_leads=0, day="", assigned_today=0)
        session.add(row)
        loads[rep_id] = row  # unflushed rows are not in the identity map: the cache is how the next lead finds it
    row.open_leads = max(0, row.open_leads + open_delta)
    if day is not None:
        if row.day != day:
            row.day, row.assigned_today = day, 0
        row.assigned_today += 1
