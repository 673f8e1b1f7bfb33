"""Routing's HTTP API: the roster, the rules, lead timelines and rep actions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import yaml
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from common.web import Admin
from routing import handlers as h
from routing.domain import RosterError, RulesError
from routing.store import AccountRow, RepRow, RoutingRepository, TeamRow

router = APIRouter()

_TEXT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


def _error(status: int, code: str, detail: Any) -> HTTPException:
    return HTTPException(status_code=status, detail={"error": code, "detail": detail})


def _iso(value: datetime | None) -> str | None:
    value = h.aware(value)
    return value.isoformat() if value else None


# -- leads ----------------------------------------------------------------------------------------------------------


@router.get("/v1/leads/{lead_id}", summary="Where a lead went and why: assignments, SLA clock and timeline")
async def get_lead(lead_id: str, request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        repo = RoutingRepository(session)
        lead = await repo.lead(lead_id)
        if lead is None:
            raise _error(404, "not_found", "this lead has not been routed (yet)")
        assignments = await repo.assignments(lead_id)
        timeline = await repo.timeline(lead_id)
    current = next((a for a in assignments if a.ended_at is None), None)
    return {
        "lead_id": lead.lead_id,
        "status": lead.status,
        "grade": lead.grade,
        "is_test": lead.is_test,
        "duplicate_of": lead.duplicate_of,
        "reassignments": lead.reassignments,
        "routed_at": _iso(lead.routed_at),
        "first_touch_at": _iso(lead.first_touch_at),
        "erased": lead.erased_at is not None,
        "current_assignment": _assignment_out(current) if current else None,
        "assignments": [_assignment_out(a) for a in assignments],
        "timeline": [{"at": _iso(t.at), "kind": t.kind, "detail": t.detail} for t in timeline],
    }


def _assignment_out(a: Any) -> dict[str, Any]:
    return {
        "assignment_id": a.id,
        "attempt": a.attempt,
        "outcome": a.outcome,
        "rep_id": a.rep_id,
        "team_id": a.team_id,
        "rule_id": a.rule_id,
        "ruleset_version": a.ruleset_version,
        "method": a.method,
        "reason": a.reason,
        "candidates": a.decision.get("candidates", []),
        "assigned_at": _iso(a.assigned_at),
        "sla": {
            "policy": a.sla_policy,
            "minutes": a.sla_minutes,
            "business_hours": a.sla_business_hours,
            "due_at": _iso(a.sla_due_at),
        }
        if a.sla_due_at
        else None,
        "ended_at": _iso(a.ended_at),
        "end_reason": a.end_reason,
    }


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["accept", "reject", "touch", "disqualify", "convert"]
    rep_id: str | None = Field(default=None, description="Who acted; defaults to the current rep")
    reason: str | None = Field(default=None, max_length=200, description="Reason code (reject, disqualify)")


@router.post(
    "/v1/leads/{lead_id}/actions", summary="A rep acts on a lead: accept, reject, touch, disqualify, convert"
)
async def lead_action(lead_id: str, body: ActionIn, request: Request, _admin: Admin) -> dict[str, Any]:
    router_: h.Router = request.app.state.router
    if body.action in ("reject", "disqualify") and not body.reason:
        raise _error(
            422,
            "validation_failed",
            [{"field": "reason", "reason": f"a reason code is required to {body.action}"}],
        )
    async with request.app.state.runtime.db.transaction() as session:
        try:
            result = await router_.act(
                session,
                lead_id,
                body.action,
                rep_id=body.rep_id,
                reason=body.reason,
                correlation_id=request.scope.get("state", {}).get("correlation_id"),
            )
        except LookupError as exc:
            raise _error(404, "not_found", str(exc)) from exc
        except ValueError as exc:
            raise _error(409, "conflict", str(exc)) from exc
    return result


# -- rules ----------------------------------------------------------------------------------------------------------


async def _rules_text(request: Request) -> str:
    raw = await request.body()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(400, "bad_request", "the body must be UTF-8") from exc


@router.get("/v1/routing/rules", summary="The routing rules in force")
async def get_rules(request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        rules = await request.app.state.router.rules(session)
    return {"version": rules.version, "rules": rules.source}


@router.put(
    "/v1/routing/rules",
    summary="Validate and activate routing rules (YAML or JSON)",
    openapi_extra=_TEXT_BODY,
)
async def put_rules(request: Request, _admin: Admin) -> dict[str, Any]:
    text = await _rules_text(request)
    try:
        async with request.app.state.runtime.db.transaction() as session:
            rules = await request.app.state.router.install_rules(session, text)
    except RulesError as exc:
        raise _error(422, "invalid_rules", list(exc.errors)) from exc
    return {"version": rules.version, "status": "active"}


class SimulateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lead: dict[str, Any] = Field(default_factory=dict)
    enrichment: dict[str, Any] = Field(default_factory=dict)
    score: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)
    is_test: bool = False
    duplicate_of: str | None = None
    rules_yaml: str | None = Field(default=None, description="Try candidate rules instead of the active ones")
    at: datetime | None = Field(default=None, description="Decide as of this time (default now)")


@router.post("/v1/routing/simulate", summary="The decision for a lead, without writing anything")
async def simulate(body: SimulateIn, request: Request, _admin: Admin) -> dict[str, Any]:
    router_: h.Router = request.app.state.router
    async with request.app.state.runtime.db.read() as session:
        try:
            rules = router_.parse_rules(body.rules_yaml) if body.rules_yaml else await router_.rules(session)
        except RulesError as exc:
            raise _error(422, "invalid_rules", list(exc.errors)) from exc
        decision = await router_.preview(
            session,
            body.model_dump(exclude={"rules_yaml", "at"}),
            rules,
            now=h.aware(body.at) or datetime.now(UTC),
        )
    return decision.to_dict()


# -- roster ---------------------------------------------------------------------------------------------------------


@router.get("/v1/reps", summary="Reps")
async def list_reps(request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        repo = RoutingRepository(session)
        loads = await repo.loads()
        return {
            "items": [
                {**r.data, "load": {"open_leads": loads[r.id].open_leads if r.id in loads else 0}}
                for r in await repo.reps()
            ]
        }


@router.get("/v1/teams", summary="Teams")
async def list_teams(request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        return {"items": [t.data for t in await RoutingRepository(session).teams()]}


@router.get("/v1/accounts", summary="Accounts: company domains and their owners")
async def list_accounts(request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        rows = await RoutingRepository(session).accounts()
    return {"items": [{"domain": a.domain, "owner": a.owner_rep_id, "name": a.name} for a in rows]}


async def _save_roster(request: Request, data: dict[str, Any]) -> dict[str, Any]:
    try:
        async with request.app.state.runtime.db.transaction() as session:
            roster = await request.app.state.router.replace_roster(session, data)
    except RosterError as exc:
        raise _error(422, "invalid_roster", list(exc.args[0]) if exc.args else str(exc)) from exc
    return {"roster_version": roster.version, "teams": len(roster.teams), "reps": len(roster.reps)}


async def _merged_roster(request: Request, **changes: Any) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        repo = RoutingRepository(session)
        teams = {t.id: t.data for t in await repo.teams()}
        reps = {r.id: r.data for r in await repo.reps()}
    teams.update(changes.get("teams", {}))
    reps.update(changes.get("reps", {}))
    return {
        "teams": list(teams.values()),
        "reps": list(reps.values()),
        "accounts": changes.get("accounts", []),
    }


@router.put("/v1/reps/{rep_id}", summary="Create or replace a rep")
async def put_rep(rep_id: str, body: dict[str, Any], request: Request, _admin: Admin) -> dict[str, Any]:
    data = {**body, "id": rep_id}
    return await _save_roster(request, await _merged_roster(request, reps={rep_id: data}))


@router.patch("/v1/reps/{rep_id}", summary="Change a rep (status, out of office, capacity, weight...)")
async def patch_rep(rep_id: str, body: dict[str, Any], request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        row = await session.get(RepRow, rep_id)
        if row is None:
            raise _error(404, "not_found", "no rep with this id")
        data = {**row.data, **body, "id": rep_id}
    return await _save_roster(request, await _merged_roster(request, reps={rep_id: data}))


@router.put("/v1/teams/{team_id}", summary="Create or replace a team")
async def put_team(team_id: str, body: dict[str, Any], request: Request, _admin: Admin) -> dict[str, Any]:
    return await _save_roster(
        request, await _merged_roster(request, teams={team_id: {**body, "id": team_id}})
    )


@router.put("/v1/accounts/{domain}", summary="Set the owner of a company domain")
async def put_account(domain: str, body: dict[str, Any], request: Request, _admin: Admin) -> dict[str, Any]:
    owner = body.get("owner")
    if not isinstance(owner, str):
        raise _error(422, "validation_failed", [{"field": "owner", "reason": "a rep id is required"}])
    async with request.app.state.runtime.db.transaction() as session:
        if await session.get(RepRow, owner) is None:
            raise _error(422, "validation_failed", [{"field": "owner", "reason": f"unknown rep {owner!r}"}])
        row = await session.get(AccountRow, domain.lower())
        if row is None:
            session.add(AccountRow(domain=domain.lower(), owner_rep_id=owner, name=body.get("name")))
        else:
            row.owner_rep_id, row.name = owner, body.get("name")
    return {"domain": domain.lower(), "owner": owner}


@router.post(
    "/v1/roster",
    summary="Load teams, reps and accounts from a YAML or JSON document",
    openapi_extra=_TEXT_BODY,
)
async def load_roster(request: Request, _admin: Admin) -> dict[str, Any]:
    text = await _rules_text(request)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _error(400, "bad_request", f"not YAML or JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _error(422, "invalid_roster", ["<root>: expected a mapping with teams, reps and accounts"])
    return await _save_roster(request, data)


_ = (TeamRow,)
