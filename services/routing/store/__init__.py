"""Routing's store: its tables and the repositories whose methods are the questions the use cases ask.

`from routing.store import X` keeps working for every table and repository; `RoutingRepository` answers all of
them on one session (use cases that need only one area may take that area's repository).
"""

from __future__ import annotations

from routing.store.crm_tables import ConnectorRow, CrmLinkRow, CrmOwnerRow, CrmSignalRow
from routing.store.leads import CaseRecord, LeadRepository
from routing.store.roster import RosterRepository
from routing.store.tables import (
    ESCALATE,
    ROSTER_VERSION,
    ROUTING_LOCK,
    AccountRow,
    AssignmentRow,
    Base,
    ErasedLead,
    LeadRow,
    RepLoadRow,
    RepRow,
    RotationRow,
    RulesetRow,
    Setting,
    SlaTimer,
    TeamRow,
    TimelineRow,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    outbox,
    outbox_dead,
    processed,
)
from routing.store.timers import ClaimedTimer, ClockFacts, TimerRepository


class RoutingRepository(RosterRepository, LeadRepository, TimerRepository):
    """Every routing question on one session."""


__all__ = [
    "ESCALATE",
    "ROSTER_VERSION",
    "ROUTING_LOCK",
    "AccountRow",
    "AssignmentRow",
    "Base",
    "CaseRecord",
    "ClaimedTimer",
    "ClockFacts",
    "ConnectorRow",
    "CrmLinkRow",
    "CrmOwnerRow",
    "CrmSignalRow",
    "ErasedLead",
    "LeadRepository",
    "LeadRow",
    "RepLoadRow",
    "RepRow",
    "RosterRepository",
    "RotationRow",
    "RoutingRepository",
    "RulesetRow",
    "Setting",
    "SlaTimer",
    "TeamRow",
    "TimelineRow",
    "TimerRepository",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "outbox",
    "outbox_dead",
    "processed",
]
