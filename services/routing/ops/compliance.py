"""How the ops views judge SLA clocks and leads: the read model's types and pure arithmetic, no I/O.

How compliance is counted (the SLA clock is routing's; see handlers.py):
- a *clock* is one assignment that carried an SLA deadline. It is **met** when the rep stopped it by the deadline
  (first touch, convert or disqualify), **missed** when it breached (or was stopped late), and undecided while it
  runs or when it ended otherwise (rejected, hold ended).
- a *lead* takes the outcome of its first decided clock, so a lead that breached and was then touched in time by
  the next rep still counts as missed. Reps are measured per clock: a breach counts against the rep who held it.
- time to first touch is from routing to the first touch for leads, and from the assignment for reps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

Outcome = Literal["met", "missed"]


@dataclass(frozen=True)
class SlaClock:
    """One assignment that carried an SLA deadline."""

    assignment_id: int
    lead_id: str
    rep_id: str | None
    team_id: str | None
    assigned_at: datetime
    due_at: datetime
    ended_at: datetime | None
    end_reason: str | None


@dataclass(frozen=True)
class LeadFacts:
    """A routed lead with every SLA clock it had, oldest first."""

    lead_id: str
    routed_at: datetime
    first_touch_at: datetime | None
    team_id: str | None
    source_kind: str | None
    source_id: str | None
    grade: str | None
    clocks: tuple[SlaClock, ...] = ()


@dataclass(frozen=True)
class OpenClock:
    """A lead whose SLA clock runs now: its current assignment has a breach timer that has not fired."""

    lead_id: str
    assignment_id: int
    rep_id: str | None
    team_id: str | None
    grade: str | None
    source_kind: str | None
    source_id: str | None
    status: str
    assigned_at: datetime
    due_at: datetime
    warned: bool

    def at_risk(self, now: datetime, within: timedelta) -> bool:
        """Past a warning, or due within the horizon (or overdue and about to breach)."""
        return self.warned or self.due_at <= now + within

    def to_dict(self, now: datetime, within: timedelta) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "assignment_id": self.assignment_id,
            "rep_id": self.rep_id,
            "team_id": self.team_id,
            "grade": self.grade,
            "source_kind": self.source_kind,
            "source_id": self.source_id,
            "status": self.status,
            "assigned_at": iso(self.assigned_at),
            "due_at": iso(self.due_at),
            "seconds_left": round((self.due_at - now).total_seconds(), 1),
            "warned": self.warned,
            "at_risk": self.at_risk(now, within),
        }


def clock_outcome(clock: SlaClock, first_touch_at: datetime | None) -> Outcome | None:
    """met or missed once the clock is decided, None while it runs or when it ended without a verdict."""
    if clock.end_reason == "sla_breach":
        return "missed"
    stopped_at: datetime | None = None
    if (
        first_touch_at is not None
        and clock.assigned_at <= first_touch_at
        and (clock.ended_at is None or first_touch_at <= clock.ended_at)
    ):
        stopped_at = first_touch_at
    elif clock.end_reason in ("converted", "disqualified"):
        stopped_at = clock.ended_at
    if stopped_at is None:
        return None
    return "met" if stopped_at <= clock.due_at else "missed"


def lead_outcome(lead: LeadFacts) -> tuple[Outcome | None, SlaClock | None]:
    """The first decided clock of the lead decides it."""
    for clock in sorted(lead.clocks, key=lambda c: (c.assigned_at, c.assignment_id)):
        outcome = clock_outcome(clock, lead.first_touch_at)
        if outcome is not None:
            return outcome, clock
    return None, None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = math.floor(rank), math.ceil(rank)
    value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return round(value, 3)


@dataclass
class Tally:
    """Counts and touch times of one group (the whole window, a team, a rep, a source, a time bucket)."""

    leads: int = 0
    met: int = 0
    missed: int = 0
    touch_seconds: list[float] = field(default_factory=list)
    open: int = 0
    at_risk: int = 0

    def add(self, outcome: Outcome | None, touch_s: float | None) -> None:
        self.leads += 1
        if outcome == "met":
            self.met += 1
        elif outcome == "missed":
            self.missed += 1
        if touch_s is not None:
            self.touch_seconds.append(touch_s)

    def to_dict(self) -> dict[str, Any]:
        decided = self.met + self.missed
        return {
            "leads": self.leads,
            "met": self.met,
            "missed": self.missed,
            "undecided": self.leads - decided,
            "within_sla_share": round(self.met / decided, 4) if decided else None,
            "touched": len(self.touch_seconds),
            "time_to_first_touch_p50_s": percentile(self.touch_seconds, 0.5),
            "time_to_first_touch_p90_s": percentile(self.touch_seconds, 0.9),
            "open": self.open,
            "at_risk": self.at_risk,
        }


def summarize(
    leads: Iterable[LeadFacts],
    open_clocks: Iterable[OpenClock],
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    at_risk_within: timedelta,
    buckets: int,
) -> dict[str, Any]:
    """Compliance and time to first touch over the window, by team, rep and source, and as a time series."""
    overall = Tally()
    teams: dict[str | None, Tally] = {}
    reps: dict[str | None, Tally] = {}
    sources: dict[tuple[str | None, str | None], Tally] = {}
    width = (until - since) / buckets
    series = [Tally() for _ in range(buckets)]
    for lead in leads:
        outcome, deciding = lead_outcome(lead)
        touch_s = _seconds(lead.routed_at, lead.first_touch_at)
        overall.add(outcome, touch_s)
        team = (deciding or (lead.clocks[0] if lead.clocks else None) or lead).team_id
        teams.setdefault(team, Tally()).add(outcome, touch_s)
        sources.setdefault((lead.source_kind, lead.source_id), Tally()).add(outcome, touch_s)
        index = min(buckets - 1, max(0, int((lead.routed_at - since) / width)))
        series[index].add(outcome, touch_s)
        for clock in lead.clocks:
            clock_result = clock_outcome(clock, lead.first_touch_at)
            touched_here = (
                lead.first_touch_at is not None
                and clock.assigned_at <= lead.first_touch_at
                and (clock.ended_at is None or lead.first_touch_at <= clock.ended_at)
            )
            rep_touch = _seconds(clock.assigned_at, lead.first_touch_at) if touched_here else None
            reps.setdefault(clock.rep_id, Tally()).add(clock_result, rep_touch)
    for running in open_clocks:
        risky = running.at_risk(now, at_risk_within)
        for tally in (
            overall,
            teams.setdefault(running.team_id, Tally()),
            reps.setdefault(running.rep_id, Tally()),
            sources.setdefault((running.source_kind, running.source_id), Tally()),
        ):
            tally.open += 1
            tally.at_risk += risky
    return {
        "overall": overall.to_dict(),
        "by_team": [{"team_id": k, **v.to_dict()} for k, v in sorted(teams.items(), key=_key_order)],
        "by_rep": [{"rep_id": k, **v.to_dict()} for k, v in sorted(reps.items(), key=_key_order)],
        "by_source": [
            {"source_kind": kind, "source_id": sid, **v.to_dict()}
            for (kind, sid), v in sorted(sources.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))
        ],
        "series": [
            {
                "start": iso(since + width * i),
                "end": iso(since + width * (i + 1)),
                **{k: v for k, v in tally.to_dict().items() if k not in ("open", "at_risk")},
            }
            for i, tally in enumerate(series)
        ],
    }


def _key_order(item: tuple[str | None, Any]) -> tuple[bool, str]:
    return (item[0] is None, item[0] or "")


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else max(0.0, (end - start).total_seconds())


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601, or None."""
    return value.isoformat() if value is not None else None
