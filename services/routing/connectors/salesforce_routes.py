"""Salesforce's settings API: the org and how to write to it, the rep <-> User mapping and its import.

Admin and ops-write change them; ops-read may look (the client secret is never shown, only whether it is set).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from common.egress import UnsafeUrl, vet_url
from common.session import ReadSession, Transaction
from common.web import HandoffRoute, problem
from routing.access.principal import Principal, require
from routing.connectors.base import ConnectorDeps
from routing.connectors.salesforce import ClientCache
from routing.connectors.salesforce_api import SalesforceError
from routing.connectors.salesforce_setup import (
    SalesforceSettingsIn,
    SetupError,
    match_users,
    owners,
    read_settings,
    rep_emails,
    save_imported,
    save_settings,
    set_owners,
    stored_config,
)
from routing.webhooks.address import webhook_address_policy

router = APIRouter(prefix="/v1/crm/salesforce", tags=["crm"], route_class=HandoffRoute)
Writer = Annotated[Principal, Depends(require("ops-write"))]
Reader = Annotated[Principal, Depends(require("ops-read"))]

FIELD = r"^[A-Za-z][A-Za-z0-9_]{0,79}$"
Fact = Literal["lead_id", "grade", "score", "reasons", "sla_due", "rule"]


class SalesforceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    login_url: str = Field(
        max_length=500, description="https://login.salesforce.com, test.salesforce.com or the org's My Domain URL"
    )
    client_id: str = Field(min_length=1, max_length=255, description="The connected app's consumer key")
    client_secret: str | None = Field(
        default=None, min_length=1, max_length=255, description="The consumer secret; omit to keep the stored one"
    )
    auth_flow: Literal["client_credentials", "jwt_bearer"] = Field(
        default="client_credentials", description="client_credentials (consumer secret) or jwt_bearer (RS256 key)"
    )
    username: str | None = Field(default=None, max_length=80, description="jwt_bearer: the integration user")
    private_key: str | None = Field(
        default=None, min_length=1, max_length=10_000, description="jwt_bearer: PEM RSA key; omit to keep it"
    )
    audience: str = Field(
        default="https://login.salesforce.com",
        pattern=r"^https://[^\s/?#]+(/[^\s?#]*)?$",
        max_length=500,
        description="jwt_bearer: aud (https://test.salesforce.com for a sandbox)",
    )
    api_version: str = Field(default="60.0", pattern=r"^\d{2,3}\.0$")
    upsert_key: str = Field(
        default="email",
        pattern=r"^(email|[A-Za-z][A-Za-z0-9_]{0,76}__c)$",
        description="email (look the Lead up by Email) or an External ID field that receives Handoff's lead id",
    )
    context_fields: dict[Fact, Annotated[str, Field(pattern=FIELD)]] = Field(
        default_factory=dict, description="Handoff facts written into Lead fields, e.g. {grade: Handoff_Grade__c}"
    )
    statuses: dict[Annotated[str, Field(min_length=1, max_length=255)], Literal["convert", "disqualify"]] = Field(
        default_factory=dict, max_length=50, description="Lead Status values that convert or disqualify the lead"
    )
    lead_source: str | None = Field(default="Handoff", max_length=40)
    enabled: bool = True


class OwnersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owners: dict[Annotated[str, Field(min_length=1, max_length=64)], str | None] = Field(
        max_length=10_000, description="rep id -> Salesforce User Id (005...), or null to unmap"
    )


class OwnerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner_id: str | None = Field(max_length=18, description="the Salesforce User Id (005...); null unmaps the rep")


def _invalid(field: str, reason: str) -> HTTPException:
    return problem(422, "validation_failed", [{"field": field, "reason": reason}])


def _clients(request: Request) -> ClientCache:
    """One client cache per app (its token survives between import calls)."""
    cache = getattr(request.app.state, "salesforce_clients", None)
    if cache is None:
        state = request.app.state
        deps = ConnectorDeps(state.runtime.db, state.settings)
        cache = state.salesforce_clients = ClientCache(deps)
    return cache


async def close(app: Any) -> None:
    """Close the routes' Salesforce client (the app's shutdown)."""
    cache = getattr(app.state, "salesforce_clients", None)
    if cache is not None:
        await cache.close()


@router.get("")
async def get_settings(session: ReadSession, _who: Reader) -> dict[str, Any]:
    return await read_settings(session)


@router.put("")
async def put_settings(body: SalesforceIn, request: Request, _who: Writer) -> dict[str, Any]:
    settings = request.app.state.settings
    try:
        destination = await vet_url(body.login_url, webhook_address_policy(settings))
    except UnsafeUrl as exc:
        raise _invalid("login_url", str(exc)) from None
    values = SalesforceSettingsIn(
        login_url=destination.url,
        client_id=body.client_id,
        client_secret=body.client_secret,
        api_version=body.api_version,
        upsert_key=body.upsert_key,
        context_fields={str(fact): name for fact, name in body.context_fields.items()},
        statuses=dict(body.statuses),
        lead_source=body.lead_source,
        enabled=body.enabled,
        auth_flow=body.auth_flow,
        username=body.username,
        private_key=body.private_key,
        audience=body.audience,
    )
    async with request.app.state.runtime.db.transaction() as session:
        try:
            return await save_settings(session, settings, values, request.app.state.router.clock())
        except SetupError as exc:
            raise _invalid(exc.field, str(exc)) from None


@router.get("/owners")
async def get_owners(session: ReadSession, _who: Reader) -> dict[str, Any]:
    return {"owners": await owners(session)}


@router.put("/owners")
async def put_owners(body: OwnersIn, request: Request, session: Transaction, _who: Writer) -> dict[str, Any]:
    try:
        return {"owners": await set_owners(request.app.state.router, session, body.owners)}
    except SetupError as exc:
        raise _invalid(exc.field, str(exc)) from None


@router.put("/owners/{rep_id}")
async def put_owner(rep_id: str, body: OwnerIn, request: Request, session: Transaction, _who: Writer) -> dict[str, Any]:
    try:
        return {"owners": await set_owners(request.app.state.router, session, {rep_id: body.owner_id})}
    except SetupError as exc:
        raise _invalid(exc.field, str(exc)) from None


@router.post("/owners/import")
async def import_owners(request: Request, _who: Writer) -> dict[str, Any]:
    """Map every rep whose email is an active Salesforce User's Email (User.Email, matched through SOQL)."""
    db, rt = request.app.state.runtime.db, request.app.state.router
    async with db.read() as session:
        try:
            config = await stored_config(session, request.app.state.settings)
        except SetupError as exc:
            raise problem(409, "not_configured", str(exc)) from None
        emails = await rep_emails(rt, session)
    try:
        matched = await match_users(_clients(request).get(config), emails)
    except SalesforceError as exc:
        raise problem(502, "salesforce_error", f"Salesforce answered: {exc}") from None
    async with db.transaction() as session:
        mapped = await save_imported(session, matched)
    unmatched = sorted(set(emails.values()) - set(matched))
    return {"imported": matched, "unmatched_reps": unmatched, "owners": mapped}
