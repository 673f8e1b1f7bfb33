"""Routes of the CRM connectors: HubSpot's connection, owner and stage mapping (ops-write; ops-read may look),
and the endpoint HubSpot's webhook subscriptions call (authenticated by HubSpot's v3 signature, not a token)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from common.crypto import SecretBox, SecretKeyError
from common.egress import UnsafeUrl, guarded_transport, vet_url
from common.hubspot import HubSpotSignatureError
from common.session import ReadSession, Transaction
from common.web import HandoffRoute, problem
from routing.access.principal import Principal, require
from routing.connectors import hubspot_inbound, hubspot_setup
from routing.connectors.hubspot_client import HubSpotError
from routing.settings import RoutingSettings
from routing.usecases.context import RoutingContext
from routing.webhooks.address import webhook_address_policy

router = APIRouter(route_class=HandoffRoute, tags=["crm"])

Writer = Annotated[Principal, Depends(require("ops-write"))]
Reader = Annotated[Principal, Depends(require("ops-read", "ops-write"))]


class HubSpotIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access_token: str | None = Field(default=None, max_length=500, description="the private app's access token")
    client_secret: str | None = Field(
        default=None, max_length=500, description="the app's client secret: verifies HubSpot's webhook signatures"
    )
    base_url: str | None = Field(default=None, max_length=2048, description="default https://api.hubapi.com")
    public_base_url: str | None = Field(
        default=None, max_length=500, pattern=r"^(https?://[^/?#]+)?$", description="the origin HubSpot calls"
    )
    enabled: bool | None = None
    stages: dict[str, dict[str, str]] | None = Field(
        default=None, description='e.g. {"lifecyclestage": {"customer": "convert"}, "hs_lead_status": '
        '{"UNQUALIFIED": "disqualify"}}; replaces the whole mapping',
    )  # fmt: skip


class OwnerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner_id: str | None = Field(max_length=128, description="the HubSpot owner id; null unmaps the rep")


def _settings(request: Request) -> RoutingSettings:
    settings: RoutingSettings = request.app.state.settings
    return settings


def _box(request: Request) -> SecretBox:
    return _settings(request).secret_box()


def _rt(request: Request) -> RoutingContext:
    rt: RoutingContext = request.app.state.router
    return rt


def http_client(request: Request) -> httpx.AsyncClient:
    """The routes' one HubSpot client (owners import, engagements read back), under the webhook egress policy."""
    client: httpx.AsyncClient | None = getattr(request.app.state, "crm_http", None)
    if client is None or client.is_closed:
        settings = _settings(request)
        client = httpx.AsyncClient(
            transport=guarded_transport(webhook_address_policy(settings)),
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
            headers={"user-agent": settings.webhook_user_agent},
        )
        request.app.state.crm_http = client
    return client


def _unreadable(exc: SecretKeyError) -> Exception:
    return problem(503, "secret_unreadable", f"the stored HubSpot secrets cannot be decrypted: {exc}")


@router.put("/v1/crm/hubspot", summary="Connect HubSpot: token, client secret, API base URL, stage mapping")
async def put_hubspot(body: HubSpotIn, request: Request, session: Transaction, _who: Writer) -> dict[str, Any]:
    settings = _settings(request)
    if body.base_url:
        try:
            await vet_url(body.base_url, webhook_address_policy(settings))
        except UnsafeUrl as exc:
            raise problem(422, "validation_failed", [{"field": "base_url", "reason": str(exc)}]) from exc
    try:
        return await hubspot_setup.configure(_rt(request), session, _box(request), **body.model_dump())
    except ValueError as exc:
        raise problem(422, "validation_failed", [{"field": "stages", "reason": str(exc)}]) from exc


@router.get("/v1/crm/hubspot", summary="The HubSpot connection (secrets only as set or not), owners, stages")
async def get_hubspot(request: Request, session: ReadSession, _who: Reader) -> dict[str, Any]:
    try:
        return await hubspot_setup.view(session, _box(request))
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    except SecretKeyError as exc:
        raise _unreadable(exc) from exc


@router.put("/v1/crm/hubspot/owners/{rep_id}", summary="Map a rep to a HubSpot owner id (null unmaps)")
async def put_owner(rep_id: str, body: OwnerIn, request: Request, session: Transaction, _who: Writer) -> dict[str, Any]:
    try:
        owners = await hubspot_setup.set_owner(_rt(request), session, rep_id, body.owner_id)
    except LookupError as exc:
        raise problem(404, "not_found", str(exc)) from exc
    return {"owners": owners}


@router.post("/v1/crm/hubspot/owners/import", summary="Map reps to HubSpot owners by email (owners API, all pages)")
async def import_owners(request: Request, _who: Writer) -> dict[str, Any]:
    db = request.app.state.runtime.db
    try:
        owners = await hubspot_setup.fetch_owners(db, http_client(request), _box(request))
    except LookupError as exc:
        raise problem(409, "not_configured", str(exc)) from exc
    except SecretKeyError as exc:
        raise _unreadable(exc) from exc
    except HubSpotError as exc:
        raise _upstream(exc) from exc
    async with db.transaction() as session:
        return await hubspot_setup.import_owners(_rt(request), session, owners)


@router.post("/v1/crm/hubspot/properties", summary="Create Handoff's contact properties in HubSpot where missing")
async def ensure_properties(request: Request, _who: Writer) -> dict[str, Any]:
    db = request.app.state.runtime.db
    try:
        created = await hubspot_setup.ensure_properties(db, http_client(request), _box(request))
    except LookupError as exc:
        raise problem(409, "not_configured", str(exc)) from exc
    except SecretKeyError as exc:
        raise _unreadable(exc) from exc
    except HubSpotError as exc:
        raise _upstream(exc) from exc
    return {"created": created}


@router.post(
    "/v1/crm/hubspot/events",
    summary="HubSpot webhook subscriptions (v3 signature): engagements touch, stage changes convert or disqualify",
)
async def hubspot_events(request: Request) -> dict[str, Any]:
    db = request.app.state.runtime.db
    body = await request.body()
    try:
        signals = await hubspot_inbound.read_events(
            db,
            http_client(request),
            _box(request),
            uri=_called_uri(request),
            body=body,
            headers=request.headers,
            now=datetime.now(UTC),
        )
    except HubSpotSignatureError as exc:
        raise problem(401, "unauthorized", f"HubSpot signature: {exc}") from exc
    except hubspot_inbound.NotConfigured as exc:
        raise problem(503, "not_configured", str(exc)) from exc
    except hubspot_inbound.BadEvents as exc:
        raise problem(400, "bad_request", [{"field": exc.field, "reason": exc.reason}]) from exc
    except SecretKeyError as exc:
        raise _unreadable(exc) from exc
    except HubSpotError as exc:
        raise _upstream(exc) from exc  # HubSpot retries a 5xx: the engagement is read again then
    async with db.transaction() as session:
        results = await hubspot_inbound.apply(_rt(request), session, signals)
    return {"results": results}


def _called_uri(request: Request) -> str:
    """The URL as HubSpot called it: the path and query as sent, not re-encoded (the signature covers them)."""
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    path = raw_path.split(b"?", 1)[0].decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    origin = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
    return origin + path + (f"?{query}" if query else "")


def _upstream(exc: HubSpotError) -> Exception:
    """HubSpot refusing (a bad token, a missing scope) is 502 and says why; busy or unreachable is 503."""
    if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
        return problem(502, "hubspot_refused", f"HubSpot: {exc}")
    headers = {"retry-after": str(max(1, int(exc.retry_after_s)))} if exc.retry_after_s else None
    return problem(503, "hubspot_unavailable", f"HubSpot: {exc}", headers=headers)


async def close(app: Any) -> None:
    """Close the routes' HubSpot client (at shutdown)."""
    client: httpx.AsyncClient | None = getattr(app.state, "crm_http", None)
    if client is not None:
        await client.aclose()
