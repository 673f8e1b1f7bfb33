"""The desk's routes: a rep claims a queued lead, a manager reassigns one or hands a rep's open leads over, and a
rep says when they are away (routing/api.py holds the rest of the lead and roster routes).

Who may: a claim, a rep (as themself) or a manager naming the rep; reassign and hand-over, ops-write; availability,
the rep themself or ops-write. Every route calls one use case; its session commits before the answer leaves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.session import ReadSession, Transaction
from common.web import HandoffRoute, problem
from routing.access.audit import Change, OwnChange
from routing.access.principal import Principal, require
from routing.domain.lifecycle import Target
from routing.usecases import actions, availability, handover
from routing.usecases.context import RoutingContext
from routing.usecases.shared import aware

router = APIRouter(route_class=HandoffRoute)

Claimer = Annotated[Principal, Depends(require("ops-write", "rep"))]
Anyone = Annotated[Principal, Depends(require("ops-read", "rep"))]


def _rt(request: Request) -> RoutingContext:
    rt: RoutingContext = request.app.state.router
    return rt


def _correlation(request: Request) -> str | None:
    correlation: str | None = request.scope.get("state", {}).get("correlation_id")
    return correlation


# -- claim, reassign, hand-over ---------------------------------------------------------------------------------


@contextmanager
def _refusals() -> Iterator[None]:
    """A use case's refusals as problems: an unknown lead 404, a rep or team that cannot take it 422 naming the
    field, a lead whose state refuses the move (already claimed, closed) 409 saying why."""
    try:
        yield
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    except handover.TargetRefused as exc:
        raise problem(422, "validation_failed", [{"field": exc.field, "reason": exc.reason}]) from exc
    except ValueError as exc:
        raise problem(409, "conflict", str(exc)) from exc


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rep_id: str | None = Field(
        default=None, description="Who claims: a rep token claims as itself; others name the rep"
    )


@router.post(
    "/v1/leads/{lead_id}/claim",
    summary="Claim a queued lead: the first claim wins, stops the queue's clock and starts the rep's",
    responses={409: {"description": "Already claimed (the answer names by whom), or not a queued lead"}},
)
async def claim(
    lead_id: str, request: Request, session: Transaction, who: Claimer, body: ClaimIn | None = None
) -> dict[str, Any]:
    named = body.rep_id if body else None
    if who.role == "rep" and named not in (None, who.rep_id):
        raise problem(403, "forbidden", [{"field": "rep_id", "reason": "a rep token claims only as its own rep"}])
    rep_id = who.rep_id if who.role == "rep" else named
    if not rep_id:
        raise problem(422, "validation_failed", [{"field": "rep_id", "reason": "name the rep who claims the lead"}])
    with _refusals():
        return await actions.act(
            _rt(request), session, lead_id, "claim", rep_id=rep_id, reason=None, correlation_id=_correlation(request)
        )


class ReassignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rep_id: str | None = Field(default=None, max_length=64, description="The rep who gets the lead")
    team_id: str | None = Field(default=None, max_length=64, description="Or the team whose rotation picks the rep")
    reason: str = Field(min_length=1, max_length=500, description="Why (carried on lead.reassigned)")

    @model_validator(mode="after")
    def _one_target(self) -> ReassignIn:
        if (self.rep_id is None) == (self.team_id is None):
            raise ValueError("name exactly one of rep_id and team_id")
        return self


@router.post(
    "/v1/leads/{lead_id}/reassign",
    summary="A manager moves an open lead to a named rep or into a team's rotation (lead.reassigned, with who and why)",
)
async def reassign(
    lead_id: str, body: ReassignIn, request: Request, session: Transaction, who: Change
) -> dict[str, Any]:
    with _refusals():
        return await handover.reassign(
            _rt(request),
            session,
            lead_id,
            Target(rep_id=body.rep_id, team_id=body.team_id),
            by=who.name,
            note=body.reason,
            correlation_id=_correlation(request),
        )


@router.post(
    "/v1/reps/{rep_id}/handover",
    summary="Route every open lead of a rep again through the rules, without them; a repeat moves nothing",
)
async def hand_over(rep_id: str, request: Request, session: Transaction, who: Change) -> dict[str, Any]:
    try:
        return await handover.hand_over(
            _rt(request), session, rep_id, by=who.name, correlation_id=_correlation(request)
        )
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc


# -- availability ---------------------------------------------------------------------------------------------------


class AvailabilityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["away", "available"]
    until: datetime | None = Field(default=None, description="Away until this time (with a UTC offset)")

    @model_validator(mode="after")
    def _until_only_when_away(self) -> AvailabilityIn:
        if self.until is not None and self.status != "away":
            raise ValueError("until goes with status away")
        if self.until is not None and self.until.tzinfo is None:
            raise ValueError("until needs a UTC offset (e.g. 2026-12-24T00:00:00Z)")
        return self


@router.put("/v1/reps/{rep_id}/availability", summary="Away (until a time) or available: the rep themself or ops")
async def put_availability(
    rep_id: str, body: AvailabilityIn, request: Request, session: Transaction, who: OwnChange
) -> dict[str, Any]:
    if not who.may_act_for(rep_id):
        raise problem(403, "forbidden", "a rep token sets only its own rep's availability")
    try:
        return await availability.set_availability(
            _rt(request), session, rep_id, away=body.status == "away", until=aware(body.until)
        )
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    except availability.AvailabilityRefused as exc:
        raise problem(422, "validation_failed", [{"field": exc.field, "reason": exc.reason}]) from exc


@router.get(
    "/v1/reps/{rep_id}/availability",
    summary="Whether a rep takes leads now, until when they are away, and how their calendar feed last read",
)
async def get_availability(rep_id: str, request: Request, session: ReadSession, who: Anyone) -> dict[str, Any]:
    if not who.may_act_for(rep_id):
        raise problem(403, "forbidden", "a rep token reads only its own rep's availability")
    try:
        return await availability.availability_of(_rt(request), session, rep_id)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
