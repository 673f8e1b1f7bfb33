"""Routing's HTTP API: the roster, the rules, lead timelines and rep actions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import yaml
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from common.conditions import DocumentRefused, load_document
from common.web import Admin, HandoffRoute
from routing import backtest as bt
from routing import handlers as h
from routing.domain import RosterError, RulesError, load_rules
from routing.domain.accounts import AccountsCsvError, normalize_domain, parse_accounts_csv, registrable_domain
from routing.store import AccountRow, RepRow, RoutingRepository

router = APIRouter(route_class=HandoffRoute)

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


def _path_errors(errors: Sequence[str]) -> list[dict[str, Any]]:
    """'rules[2].action.team: unknown team' -> {"path": "rules[2].action.team", "reason": "unknown team"}.

    A condition's error ends with "(line N)" when the rules came as text; the line becomes its own field.
    """
    out: list[dict[str, Any]] = []
    for error in errors:
        path, separator, reason = error.partition(": ")
        item: dict[str, Any] = {"path": path, "reason": reason}
        if not separator:
            item = {"path": "<document>", "reason": error}
        line = _LINE_SUFFIX.search(item["reason"])
        if line is not None:
            item["line"] = int(line.group(1))
        out.append(item)
    return out


_LINE_SUFFIX = re.compile(r" \(line (\d+)\)$")


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
        raise _error(422, "invalid_rules", _path_errors(exc.errors)) from exc
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
async def simulate(body: SimulateIn, request: Request, _admin: Admin) -> dict[str, Any]:
    router_: h.Router = request.app.state.router
    async with request.app.state.runtime.db.read() as session:
        try:
            rules = router_.parse_rules(body.rules_yaml) if body.rules_yaml else await router_.rules(session)
        except RulesError as exc:
            raise _error(422, "invalid_rules", _path_errors(exc.errors)) from exc
        now = h.aware(body.at) or datetime.now(UTC)
        decision = await router_.preview(session, body.model_dump(exclude={"rules_yaml", "at"}), rules, now=now)
        # The SLA policy the decision would start (rule > team > defaults): minutes, warnings, ladder and, for a
        # given `at`, the due time (without one the answer stays the same from one call to the next).
        sla = await router_.preview_sla(session, decision, rules, body.score.get("grade"), now)
    if sla is not None and body.at is None:
        sla["due_at"] = None
    return {**decision.to_dict(), "sla": sla}


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
async def backtest(body: BacktestIn, request: Request, _admin: Admin) -> dict[str, Any]:
    router_: h.Router = request.app.state.router
    until = h.aware(body.until) or datetime.now(UTC)
    since = h.aware(body.since) or until - timedelta(days=7)
    if since >= until:
        raise _error(422, "validation_failed", [{"field": "since", "reason": "must be before until"}])
    async with request.app.state.runtime.db.read() as session:
        try:
            candidate = router_.parse_rules(body.rules) if isinstance(body.rules, str) else load_rules(body.rules)
        except RulesError as exc:
            raise _error(422, "invalid_rules", _path_errors(exc.errors)) from exc
        roster = await router_.roster(session)
        problems = h.roster_problems(candidate, roster)
        if problems:
            raise _error(422, "invalid_rules", _path_errors(problems))
        try:
            return await bt.backtest(
                session,
                current=await router_.rules(session),
                candidate=candidate,
                teams=roster.teams,
                reps=roster.reps,
                since=since,
                until=until,
                max_leads=request.app.state.settings.backtest_max_leads,
                changed_limit=body.changed_limit,
                sla_defaults=router_.sla_policies,
            )
        except bt.WindowTooLarge as exc:
            raise _error(422, "window_too_large", str(exc)) from exc


# -- roster ---------------------------------------------------------------------------------------------------------


@router.get("/v1/reps", summary="Reps")
async def list_reps(request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        repo = RoutingRepository(session)
        loads = await repo.loads()
        return {
            "items": [_rep_out(r, loads) for r in await repo.reps()]
        }


@router.get("/v1/teams", summary="Teams")
async def list_teams(request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        return {"items": [t.data for t in await RoutingRepository(session).teams()]}


@router.get("/v1/accounts", summary="Accounts: company domains and their owners")
async def list_accounts(request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        rows = await RoutingRepository(session).accounts()
    return {
        "items": [
            {"domain": a.domain, "account": a.account_id or a.domain, "owner": a.owner_rep_id, "name": a.name}
            for a in rows
        ]
    }


def _roster_errors(errors: Sequence[str], ids: dict[str, list[str]], edited: tuple[str, str] | None) -> Any:
    """Paths into the merged roster become paths a caller recognises: the body's own fields, or kind[id]."""
    out = []
    for item in _path_errors(errors):
        path = item["path"]
        for kind, kind_ids in ids.items():
            for index, item_id in enumerate(kind_ids):
                prefix = f"{kind}[{index}]"
                if path == prefix or path.startswith((prefix + ".", prefix + "[")):
                    if edited == (kind, item_id):
                        path = path[len(prefix) :].lstrip(".") or "<body>"
                    else:
                        path = f"{kind}[{item_id}]" + path[len(prefix) :]
                    break
            else:
                continue
            break
        out.append({"path": path, "reason": item["reason"]})
    return out


async def _save_roster(
    request: Request,
    *,
    teams: dict[str, dict[str, Any]] | None = None,
    reps: dict[str, dict[str, Any]] | None = None,
    edited: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Merge the changes into the stored roster and save it, validated as a whole, in one transaction."""
    ids: dict[str, list[str]] = {}
    try:
        async with request.app.state.runtime.db.transaction() as session:
            repo = RoutingRepository(session)
            await repo.lock_routing()  # roster edits serialize with each other and with routing decisions
            merged_teams = {t.id: t.data for t in await repo.teams()}
            merged_reps = {r.id: r.data for r in await repo.reps()}
            merged_teams.update(teams or {})
            merged_reps.update(reps or {})
            ids = {"teams": list(merged_teams), "reps": list(merged_reps)}
            roster = await request.app.state.router.replace_roster(
                session, {"teams": list(merged_teams.values()), "reps": list(merged_reps.values())}
            )
    except RosterError as exc:
        raise _error(422, "invalid_roster", _roster_errors(exc.errors, ids, edited)) from exc
    return {"roster_version": roster.version, "teams": len(roster.teams), "reps": len(roster.reps)}


def _rep_out(row: RepRow, loads: dict[str, Any]) -> dict[str, Any]:
    load = loads.get(row.id)
    return {
        **row.data,
        "load": {
            "open_leads": load.open_leads if load else 0,
            "assigned_today": load.assigned_today if load else 0,
            "day": load.day if load else None,
        },
    }


@router.get("/v1/reps/{rep_id}", summary="One rep, with their current load")
async def get_rep(rep_id: str, request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        row = await session.get(RepRow, rep_id)
        if row is None:
            raise _error(404, "not_found", "no rep with this id")
        return _rep_out(row, await RoutingRepository(session).loads())


@router.put("/v1/reps/{rep_id}", summary="Create or replace a rep")
async def put_rep(rep_id: str, body: dict[str, Any], request: Request, _admin: Admin) -> dict[str, Any]:
    return await _save_roster(request, reps={rep_id: {**body, "id": rep_id}}, edited=("reps", rep_id))


@router.patch(
    "/v1/reps/{rep_id}",
    summary="Change a rep: status (active, away, ooo, left), out of office from/until, capacity, weight, hours...",
)
async def patch_rep(rep_id: str, body: dict[str, Any], request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        row = await session.get(RepRow, rep_id)
        if row is None:
            raise _error(404, "not_found", "no rep with this id")
        data = {**row.data, **body, "id": rep_id}
    return await _save_roster(request, reps={rep_id: data}, edited=("reps", rep_id))


@router.put("/v1/teams/{team_id}", summary="Create or replace a team")
async def put_team(team_id: str, body: dict[str, Any], request: Request, _admin: Admin) -> dict[str, Any]:
    return await _save_roster(request, teams={team_id: {**body, "id": team_id}}, edited=("teams", team_id))


@router.put("/v1/accounts/{domain}", summary="Set the owner of a company domain (and the account it belongs to)")
async def put_account(domain: str, body: dict[str, Any], request: Request, _admin: Admin) -> dict[str, Any]:
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
        raise _error(422, "validation_failed", problems)
    domain = normalize_domain(domain) or domain
    async with request.app.state.runtime.db.transaction() as session:
        if await session.get(RepRow, owner) is None:
            raise _error(422, "validation_failed", [{"field": "owner", "reason": f"unknown rep {owner!r}"}])
        existing = await session.get(AccountRow, domain)
        account_id = account or (existing.account_id if existing and existing.account_id else domain)
        await RoutingRepository(session).save_account(account_id, str(owner), name, [domain])
    return {"domain": domain, "account": account_id, "owner": owner}


@router.post(
    "/v1/accounts/import",
    summary="Import accounts from CSV: account,name,domains,owner (domains separated by ';')",
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}},
)
async def import_accounts(request: Request, _admin: Admin) -> dict[str, Any]:
    text = await _rules_text(request)
    try:
        specs = parse_accounts_csv(text)
    except AccountsCsvError as exc:
        raise _error(422, "invalid_accounts", _path_errors(exc.errors)) from exc
    async with request.app.state.runtime.db.transaction() as session:
        repo = RoutingRepository(session)
        known = {rep.id for rep in await repo.reps()}
        unknown = [f"account {spec.id}.owner: unknown rep {spec.owner!r}" for spec in specs if spec.owner not in known]
        if unknown:
            raise _error(422, "invalid_accounts", _path_errors(unknown))
        for spec in specs:
            await repo.save_account(spec.id, spec.owner, spec.name, spec.domains)
    return {"accounts": len(specs), "domains": sum(len(spec.domains) for spec in specs)}


@router.delete("/v1/accounts/{domain}", summary="Forget a company domain's owner", status_code=204)
async def delete_account(domain: str, request: Request, _admin: Admin) -> None:
    async with request.app.state.runtime.db.transaction() as session:
        row = await session.get(AccountRow, domain.lower())
        if row is None:
            raise _error(404, "not_found", "no account with this domain")
        await session.delete(row)


@router.post(
    "/v1/roster",
    summary="Load teams, reps and accounts from a YAML or JSON document",
    openapi_extra=_TEXT_BODY,
)
async def load_roster(request: Request, _admin: Admin) -> dict[str, Any]:
    text = await _rules_text(request)
    try:
        data = load_document(text, yaml.SafeLoader, "the roster")[1]
    except DocumentRefused as exc:
        raise _error(422, "invalid_roster", [{"path": "<document>", "reason": str(exc)}]) from exc
    except yaml.YAMLError as exc:
        raise _error(400, "bad_request", f"not YAML or JSON: {exc}") from exc
    if not isinstance(data, dict):
        reason = "expected a mapping with teams, reps and accounts"
        raise _error(422, "invalid_roster", [{"path": "<document>", "reason": reason}])
    try:
        async with request.app.state.runtime.db.transaction() as session:
            await RoutingRepository(session).lock_routing()
            roster = await request.app.state.router.replace_roster(session, data)
    except RosterError as exc:
        raise _error(422, "invalid_roster", _path_errors(exc.errors)) from exc
    return {"roster_version": roster.version, "teams": len(roster.teams), "reps": len(roster.reps)}
