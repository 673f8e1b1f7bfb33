"""Teams and reps as the router sees them (the seed-file parser that builds them is routing.domain.roster)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from routing.domain.hours import WorkingHours
from routing.domain.sla import SlaBlock

REP_STATUSES = ("active", "away", "ooo", "left")
METHODS = ("round_robin", "weighted", "least_loaded")
# What fills a rep's max_open: their open leads nobody has worked yet (the default), or every open lead.
CAPACITY_COUNTS = ("untouched", "open")


@dataclass(frozen=True)
class Team:
    """A group of reps sharing a rotation and a queue."""

    id: str
    name: str
    queue_sla_minutes: int = 60
    method: str = "weighted"
    queue_business_hours: bool = True
    timezone: str = "UTC"
    hours: WorkingHours = field(default_factory=WorkingHours)
    manager_id: str | None = None
    sla: SlaBlock | None = None  # the team's SLA policy, under a matching rule's own
    capacity_counts: str | None = None  # untouched | open; None: the environment's setting


@dataclass(frozen=True)
class Rep:
    """A person who can receive leads, with where, when and how much they can take."""

    id: str
    name: str
    email: str
    team: str | None = None
    timezone: str = "UTC"
    hours: WorkingHours = field(default_factory=WorkingHours)
    languages: frozenset[str] = frozenset()
    territories: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    weight: int = 1
    max_open: int | None = None
    max_per_day: int | None = None
    status: str = "active"
    ooo_from: datetime | None = None
    ooo_until: datetime | None = None
    manager_id: str | None = None
    calendar_url: str | None = None  # an iCalendar feed: its all-day events mark the rep away
    away: tuple[tuple[datetime, datetime], ...] = ()  # [start, end) windows read from that feed

    def is_out_of_office(self, now: datetime) -> bool:
        """Whether `now` is inside the rep's out-of-office window or a calendar away window (or status says ooo)."""
        if self.status == "ooo" or any(start <= now < end for start, end in self.away):
            return True
        if self.ooo_from is None and self.ooo_until is None:
            return False
        started = self.ooo_from is None or self.ooo_from <= now
        not_over = self.ooo_until is None or now < self.ooo_until
        return started and not_over

    def is_available(self, now: datetime) -> bool:
        """Active and not out of office: present, whatever their hours, capacity or fit."""
        return self.status == "active" and not self.is_out_of_office(now)


@dataclass(frozen=True)
class RepLoad:
    """How busy a rep is right now, as counted by the caller's store."""

    open_leads: int = 0
    assigned_today: int = 0
