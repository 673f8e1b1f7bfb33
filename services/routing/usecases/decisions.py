"""What a routing decision writes: the lead's view, the assignment row, the timeline entry and the event data; one
copy shared by the one-lead path (assign) and the batch path (batch)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from common.erasure import anonymous_enrichment
from routing.domain import Decision, Rep
from routing.domain.rules import quality_view, score_view
from routing.domain.sla import ResolvedSla
from routing.store import AssignmentRow, LeadRow
from routing.store.decision_rows import AssignmentValues, LeadValues


def scored_view(data: Mapping[str, Any], *, erased: bool) -> dict[str, Any]:
    """What routing keeps of a lead.scored and decides on; an erased person's lead keeps no personal data."""
    enrichment = dict(data.get("enrichment") or {})
    return {
        "lead": {} if erased else dict(data.get("lead") or {}),
        "enrichment": anonymous_enrichment(enrichment) if erased else enrichment,
        "score": score_view(data),
        "source": dict(data.get("source") or {}),
        "is_test": bool(data.get("is_test")),
        "duplicate_of": data.get("duplicate_of"),
        "quality": quality_view(data),
    }


def assignment_row(
    assignment_id: int,
    lead_id: str,
    decision: Decision,
    resolved: ResolvedSla | None,
    due: datetime | None,
    attempt: int,
    now: datetime,
) -> AssignmentValues:
    """An assignment row's columns, as a tuple (a batch's executemany; `._asdict()` for the ORM row of one)."""
    policy = resolved.policy if resolved and due else None
    return AssignmentValues(
        assignment_id,
        lead_id,
        decision.outcome,
        decision.rep_id,
        decision.team_id,
        decision.rule_id,
        decision.ruleset_version,
        decision.method,
        decision.reason,
        # The policy is kept with the assignment: its ladder and follow-up outlive a change of rules.
        {**decision.to_dict(), "sla": resolved.stored if resolved and due else None},
        attempt,
        now,
        policy.grade if policy else None,
        policy.minutes if policy else None,
        policy.business_hours if policy else None,
        due,
    )


def timeline_detail(
    assignment_id: int,
    attempt: int,
    decision: Decision,
    previous: AssignmentRow | None,
    end_reason: str | None,
    due: datetime | None,
    note: Mapping[str, Any] | None,
    *,
    iso: Callable[[datetime], str] = datetime.isoformat,
) -> dict[str, Any]:
    """The timeline entry of a decision: who, why, the clock, and every candidate's verdict (`iso`: a batch's
    memo of the ISO text of times many of its leads share)."""
    return {
        "assignment_id": assignment_id,
        "attempt": attempt,
        "outcome": decision.outcome,
        "rep_id": decision.rep_id,
        "team_id": decision.team_id,
        "rule_id": decision.rule_id,
        "ruleset_version": decision.ruleset_version,
        "reason": decision.reason,
        "previous_rep_id": previous.rep_id if previous else None,
        "end_reason": end_reason,
        "sla_due_at": iso(due) if due else None,
        "candidates": list(decision.candidate_dicts),
        **(note or {}),
    }


def assignment_data(
    lead: LeadRow | LeadValues,
    assignment: AssignmentRow | AssignmentValues,
    decision: Decision,
    rep: Rep | None,
    previous: AssignmentRow | None,
    end_reason: str | None,
    *,
    iso: Callable[[datetime], str] = datetime.isoformat,
) -> dict[str, Any]:
    """lead.assigned / lead.reassigned data: the decision, its reasons and clock, and the lead for the rep (`iso`:
    as timeline_detail's); `lead` and `assignment` the ORM rows, or a batch's tuples of their columns."""
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
        "candidates": list(decision.candidate_dicts),
        "hold_until": decision.hold_until.isoformat() if decision.hold_until else None,
        "assigned_at": iso(assignment.assigned_at),
        "sla": (
            {
                "policy": assignment.sla_policy,
                "minutes": assignment.sla_minutes,
                "business_hours": assignment.sla_business_hours,
                "due_at": iso(assignment.sla_due_at),
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
        "received_at": lead.received_at.isoformat() if lead.received_at else None,
        "lead": view.get("lead"),
        "score": view.get("score"),
    }
