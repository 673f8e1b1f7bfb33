"""Routing's HTTP API: the roster, the rules, lead timelines and rep actions.

Each route parses, calls one use case (routing.usecases) and shapes the answer; its session comes from
common.session and commits before the answer leaves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from common.conditions import DocumentRefused, load_document
from common.session import ReadSession, Transaction
from common.web import HandoffRoute, problem
from routing.access.audit import Change, OwnChange, self_service
from routing.access.principal import Principal, require
from routing.domain import RosterError, RulesError
from routing.domain.accounts import AccountsCsvError, normalize_domain, parse_accounts_csv, registrable_domain
from routing.handlers import Router
from routing.usecases import actions, preview, roster, story
from routing.usecases.shared import aware

router = APIRouter(route_class=HandoffRoute)
Reader = Annotated[Principal, Depends(require("ops-read"))]
Actor = Annotated[Principal, Depends(require("ops-write", "rep"))]
Viewer = Annotated[Principal, Depends(require("ops-read", "rep"))]  # a rep sees only the leads they hold

_TEXT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


def _router(request: Request) -> Router:
    router_: Router = request.app.state.router
    return router_


def _path_errors(errors: Sequence[str], *, lines: bool = True) -> list[dict[str, Any]]:
    """'rules[2].action.team: unknown team' -> {"path": "rules[2].action.team", "reason": "unknown team"}.

    A condition's error ends with "(line N)" when the rules came as text; the line becomes its own field.
    """
    out: list[dict[str, Any]] = []
    for error in errors:
        path, separator, reason = error.partition(": ")
        item: dict[str, Any] = {"path": path, "reason": reason}
        if not separator:
            item = {"path": "<document>", "reason": error}
        line = _LINE_SUFFIX.search(item["reason"]) if lines else None
        if line is not None:
            item["line"] = int(line.group(1))
        out.append(item)
    return out


_LINE_SUFFIX = re.compile(r" \(line (\d+)\)$")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# -- leads ----------------------------------------------------------------------------------------------------------


@router.get("/v1/leads/{lead_id}", summary="Where a lead went and why: assignments, SLA clock and timeline")
async def get_lead(lead_id: str, session: ReadSession, who: Viewer) -> dict[str, Any]:
    try:
        found = await story.lead_story(session, lead_id)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    if not who.may_act_for(found.lead.current_rep_id):
        raise problem(403, "forbidden", "a rep token reads only the leads its rep holds")
    lead, current, timeline = found.lead, found.current, found.timeline
    touch = next((t.detail for t in timeline if t.kind == "touched" and "time_to_first_touch_s" in t.detail), None)
    return {
        "lead_id": lead.lead_id,
        "status": lead.status,
        "grade": lead.grade,
        "is_test": lead.is_test,
        "duplicate_of": lead.duplicate_of,
        # A repeat that joined the person's open lead (status "merged"): that lead holds its rep, clock and story.
        "merged_into": lead.merged_into,
        "reassignments": lead.reassignments,
        "routed_at": _iso(lead.routed_at),
        "first_touch_at": _iso(lead.first_touch_at),
        "time_to_first_touch": {
            "seconds": touch["time_to_first_touch_s"],
            "working_minutes": touch.get("working_minutes"),
            "within_sla": touch.get("within_sla"),
        }
        if touch
        else None,
        "erased": lead.erased_at is not None,
        "quality": {"flags": list(((lead.view or {}).get("quality") or {}).get("flags") or [])},
        "current_assignment": _assignment_out(current) if current else None,
        "assignments": [_assignment_out(a) for a in found.assignments],
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
        "match": a.decision.get("match"),  # the lead's account and how it was matched (None: no account)
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

    action: Literal["accept", "reject", "touch", "disqualify", "convert", "claim"]
    rep_id: str | None = Field(default=None, description="Who acted; defaults to the current rep (claim: the claimer)")
    reason: str | None = Field(default=None, max_length=200, description="Reason code (reject, disqualify)")


@router.post(
    "/v1/leads/{lead_id}/actions",
    summary="A rep acts on a lead: accept, reject, touch, disqualify, convert, or claim a queued one",
)
async def lead_action(
    lead_id: str, body: ActionIn, request: Request, session: Transaction, who: Actor
) -> dict[str, Any]:
    if who.role == "rep" and body.rep_id not in (None, who.rep_id):
        raise problem(403, "forbidden", [{"field": "rep_id", "reason": "a rep token acts only as its own rep"}])
    if body.action in ("reject", "disqualify") and not body.reason:
        reason = f"a reason code is required to {body.action}"
        raise problem(422, "validation_failed", [{"field": "reason", "reason": reason}])
    try:
        return await actions.act(
            _router(request),
            session,
            lead_id,
            body.action,
            rep_id=who.rep_id if who.role == "rep" else body.rep_id,
            reason=body.reason,
            correlation_id=request.scope.get("state", {}).get("correlation_id"),
            owner_only=who.role == "rep",
        )
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    except PermissionError as exc:
        raise problem(403, "forbidden", str(exc)) from exc
    except ValueError as exc:
        raise problem(409, "conflict", str(exc)) from exc


# -- rules ----------------------------------------------------------------------------------------------------------


async def _body_text(request: Request) -> str:
    raw = await request.body()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise problem(400, "bad_request", "the body must be UTF-8") from exc


@router.get("/v1/routing/rules", summary="The routing rules in force")
async def get_rules(request: Request, session: ReadSession, _who: Reader) -> dict[str, Any]:
    rules = await _router(request).rules(session)
    return {"version": rules.version, "rules": rules.source}


@router.put(
    "/v1/routing/rules",
    summary="Validate and activate routing rules (YAML or JSON)",
    openapi_extra=_TEXT_BODY,
)
async def put_rules(request: Request, session: Transaction, _who: Change) -> dict[str, Any]:
    text = await _body_text(request)
    try:
        rules = await roster.install_rules(_router(request), session, text)
    except RulesError as exc:
        raise problem(422, "invalid_rules", _path_errors(exc.errors)) from exc
    return {"version": rules.version, "status": "active"}


class SimulateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lead: dict[str, Any] = Field(default_factory=dict)
    enrichment: dict[str, Any] = Field(default_factory=dict)
    score: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)
    is_test: bool = False
    duplicate_of: str | None = None
    quality: dict[str, Any] = Field(default_factory=dict, description="Quality flags, e.g. {flags: [phone_unparsed]}")
    rules_yaml: str | None = Field(default=None, description="Try candidate rules instead of the active ones")
    at: datetime | None = Field(
        default=None, description="Decide as of this time (default now); with it, the answer's sla.due_at is given"
    )


@router.post("/v1/routing/simulate", summary="The decision for a lead, without writing anything")
async def simulate(body: SimulateIn, request: Request, session: ReadSession, _who: Reader) -> dict[str, Any]:
    view = body.model_dump(exclude={"rules_yaml", "at"})
    try:
        return await preview.simulate(_router(request), session, view, body.rules_yaml, body.at)
    except RulesError as exc:
        raise problem(422, "invalid_rules", _path_errors(exc.errors)) from exc


class BacktestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: str | dict[str, Any] = Field(description="The candidate ruleset: YAML or JSON text, or a JSON object")
    since: datetime | None = Field(default=None, description="Window start (default: 7 days before until)")
    until: datetime | None = Field(default=None, description="Window end, exclusive (default: now)")
    changed_limit: int = Field(default=200, ge=0, le=5000, description="At most this many changed leads listed")


@router.post(
    "/v1/routing/backtest",
    summary="Replay a past window of leads through candidate rules beside the current ones; writes nothing",
    responses={422: {"description": "Invalid rules (each error names its path), window or window too large"}},
)
async def backtest(body: BacktestIn, request: Request, session: ReadSession, _who: Reader) -> dict[str, Any]:
    until = aware(body.until) or datetime.now(UTC)
    since = aware(body.since) or until - timedelta(days=7)
    if since >= until:
        raise problem(422, "validation_failed", [{"field": "since", "reason": "must be before until"}])
    try:
        return await preview.backtest(
            _router(request), session, body.rules, since=since, until=until, changed_limit=body.changed_limit
        )
    except RulesError as exc:
        raise problem(422, "invalid_rules", _path_errors(exc.errors)) from exc
    except preview.WindowTooLarge as exc:
        raise problem(422, "window_too_large", str(exc)) from exc


# -- roster ---------------------------------------------------------------------------------------------------------


@router.get("/v1/reps", summary="Reps")
async def list_reps(session: ReadSession, _who: Reader) -> dict[str, Any]:
    return {"items": await roster.reps_with_loads(session)}


@router.get("/v1/teams", summary="Teams")
async def list_teams(session: ReadSession, _who: Reader) -> dict[str, Any]:
    return {"items": await roster.teams(session)}


@router.get("/v1/accounts", summary="Accounts: company domains and their owners")
async def list_accounts(session: ReadSession, _who: Reader) -> dict[str, Any]:
    return {"items": await roster.accounts(session)}


def _roster_out(saved: Any) -> dict[str, Any]:
    return {"roster_version": saved.version, "teams": len(saved.teams), "reps": len(saved.reps)}


@router.get("/v1/reps/{rep_id}", summary="One rep, with their current load")
async def get_rep(rep_id: str, session: ReadSession, _who: Reader) -> dict[str, Any]:
    try:
        return await roster.rep_with_load(session, rep_id)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc


@router.put("/v1/reps/{rep_id}", summary="Create or replace a rep")
async def put_rep(
    rep_id: str, body: dict[str, Any], request: Request, session: Transaction, _who: Change
) -> dict[str, Any]:
    try:
        saved = await roster.edit_roster(_router(request), session, reps={rep_id: {**body, "id": rep_id}})
    except roster.RosterEditRefused as exc:
        raise problem(422, "invalid_roster", _path_errors(exc.errors_for(("reps", rep_id)), lines=False)) from exc
    return _roster_out(saved)


@router.patch(
    "/v1/reps/{rep_id}",
    summary="Change a rep: status (active, away, ooo, left), out of office from/until, capacity, weight, hours...",
)
async def patch_rep(
    rep_id: str, body: dict[str, Any], request: Request, session: Transaction, who: OwnChange
) -> dict[str, Any]:
    self_service(who, rep_id, body)
    try:
        saved = await roster.patch_rep(_router(request), session, rep_id, body)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    except roster.RosterEditRefused as exc:
        raise problem(422, "invalid_roster", _path_errors(exc.errors_for(("reps", rep_id)), lines=False)) from exc
    return _roster_out(saved)


@router.put("/v1/teams/{team_id}", summary="Create or replace a team")
async def put_team(
    team_id: str, body: dict[str, Any], request: Request, session: Transaction, _who: Change
) -> dict[str, Any]:
    try:
        saved = await roster.edit_roster(_router(request), session, teams={team_id: {**body, "id": team_id}})
    except roster.RosterEditRefused as exc:
        raise problem(422, "invalid_roster", _path_errors(exc.errors_for(("teams", team_id)), lines=False)) from exc
    return _roster_out(saved)


@router.put("/v1/accounts/{domain}", summary="Set the owner of a company domain (and the account it belongs to)")
async def put_account(domain: str, body: dict[str, Any], session: Transaction, _who: Change) -> dict[str, Any]:
    owner, name, account = body.get("owner"), body.get("name"), body.get("account")
    problems = []
    if not isinstance(owner, str):
        problems.append({"field": "owner", "reason": "a rep id is required"})
    if name is not None and not isinstance(name, str):
        problems.append({"field": "name", "reason": "a company name, or left out"})
    if account is not None and not isinstance(account, str):
        problems.append({"field": "account", "reason": "an account id, or left out"})
    if normalize_domain(domain) is None or registrable_domain(normalize_domain(domain) or "") is None:
        problems.append({"field": "domain", "reason": "a company domain like acme.com"})
    if problems:
        raise problem(422, "validation_failed", problems)
    domain = normalize_domain(domain) or domain
    try:
        account_id = await roster.put_account(session, domain, str(owner), name, account)
    except RosterError as exc:
        found = [{"field": item["path"], "reason": item["reason"]} for item in _path_errors(exc.errors)]
        raise problem(422, "validation_failed", found) from exc
    return {"domain": domain, "account": account_id, "owner": owner}


@router.post(
    "/v1/accounts/import",
    summary="Import accounts from CSV: account,name,domains,owner (domains separated by ';')",
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}},
)
async def import_accounts(request: Request, session: Transaction, _who: Change) -> dict[str, Any]:
    text = await _body_text(request)
    try:
        specs = parse_accounts_csv(text)
        await roster.import_accounts(session, specs)
    except (AccountsCsvError, RosterError) as exc:
        raise problem(422, "invalid_accounts", _path_errors(exc.errors)) from exc
    return {"accounts": len(specs), "domains": sum(len(spec.domains) for spec in specs)}


@router.delete("/v1/accounts/{domain}", summary="Forget a company domain's owner", status_code=204)
async def delete_account(domain: str, session: Transaction, _who: Change) -> None:
    try:
        await roster.delete_account(session, domain)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc


@router.post(
    "/v1/roster",
    summary="Load teams, reps and accounts from a YAML or JSON document",
    openapi_extra=_TEXT_BODY,
)
async def load_roster(request: Request, session: Transaction, _who: Change) -> dict[str, Any]:
    text = await _body_text(request)
    try:
        data = load_document(text, yaml.SafeLoader, "the roster")[1]
    except DocumentRefused as exc:
        raise problem(422, "invalid_roster", [{"path": "<document>", "reason": str(exc)}]) from exc
    except yaml.YAMLError as exc:
        raise problem(400, "bad_request", f"not YAML or JSON: {exc}") from exc
    if not isinstance(data, dict):
        reason = "expected a mapping with teams, reps and accounts"
        raise problem(422, "invalid_roster", [{"path": "<document>", "reason": reason}])
    try:
        saved = await roster.load_roster(_router(request), session, data)
    except RosterError as exc:
        raise problem(422, "invalid_roster", _path_errors(exc.errors)) from exc
    return _roster_out(saved)
