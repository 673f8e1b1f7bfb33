"""Setting HubSpot up: the connection (token and client secret sealed at rest), the owner mapping (by hand, or
imported from HubSpot's owners by matching the reps' emails), the stage mapping, and the connector endpoint whose
deliveries carry assignments to HubSpot (format "hubspot", subscribed to lead.assigned and lead.reassigned).

Each use case takes the caller's session (the entrypoint owns the transaction); `fetch_owners` calls HubSpot and
is run outside any transaction.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from common.crypto import SecretBox
from common.db import Database
from routing.connectors.hubspot import DEFAULT_STAGES, EVENT_TYPES, SYSTEM, HubSpotConfig, load_config
from routing.connectors.hubspot_client import HubSpotClient
from routing.store import ConnectorRow, WebhookEndpoint
from routing.store.crm import CrmRepository
from routing.usecases.context import RoutingContext

STAGE_PROPERTIES = ("lifecyclestage", "hs_lead_status")


def check_stages(stages: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """A stage mapping: property (lifecyclestage | hs_lead_status) -> value -> convert | disqualify; raises
    ValueError naming the bad entry."""
    out: dict[str, dict[str, str]] = {}
    for prop, values in stages.items():
        if prop not in STAGE_PROPERTIES:
            raise ValueError(f"stages.{prop}: choose a property from {list(STAGE_PROPERTIES)}")
        for value, action in values.items():
            if action not in ("convert", "disqualify"):
                raise ValueError(f"stages.{prop}.{value}: {action!r} is not convert or disqualify")
        out[prop] = dict(values)
    return out


async def configure(
    rt: RoutingContext,
    session: AsyncSession,
    box: SecretBox,
    *,
    access_token: str | None = None,
    client_secret: str | None = None,
    base_url: str | None = None,
    public_base_url: str | None = None,
    enabled: bool | None = None,
    stages: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Create or change the HubSpot connection (what is given changes; secrets are sealed) and its endpoint."""
    repo = CrmRepository(session)
    now = rt.clock()
    row = await repo.connector(SYSTEM)
    if row is None:
        row = ConnectorRow(system=SYSTEM, enabled=True, config={"stages": dict(DEFAULT_STAGES)}, updated_at=now)
        repo.add(row)
    config = dict(row.config or {})
    if access_token is not None:
        config["access_token"] = box.seal(access_token) if access_token else ""
    if client_secret is not None:
        config["client_secret"] = box.seal(client_secret) if client_secret else ""
    if base_url is not None:
        config["base_url"] = base_url
    if public_base_url is not None:
        config["public_base_url"] = public_base_url
    if stages is not None:
        config["stages"] = check_stages(stages)
    row.config = config  # a new dict: the JSON column sees the change
    if enabled is not None:
        row.enabled = enabled
    row.updated_at = now
    await _endpoint(repo, box, row, now)
    await repo.flush()
    return await view(session, box)


async def _endpoint(repo: CrmRepository, box: SecretBox, row: ConnectorRow, now: datetime) -> None:
    """The connector endpoint follows the connection: created once, its URL the API's, enabled with it."""
    endpoint = await repo.connector_endpoint(SYSTEM)
    url = str(row.config.get("base_url") or HubSpotConfig().base_url)
    if endpoint is None:
        endpoint = WebhookEndpoint(
            id=str(uuid.uuid4()),
            url=url,
            description="HubSpot connector: contact upserts on assignment",
            event_types=list(EVENT_TYPES),
            format=SYSTEM,
            enabled=row.enabled,
            secret=box.seal(secrets.token_urlsafe(24)),  # unused (nothing is signed), but the column wants one
            created_at=now,
            updated_at=now,
        )
        repo.add(endpoint)
        return
    endpoint.url = url
    if row.enabled and not endpoint.enabled:
        endpoint.enabled = True
        endpoint.disabled_reason = endpoint.disabled_at = endpoint.failing_since = None
    elif not row.enabled and endpoint.enabled:
        endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = False, "manual", now
    endpoint.updated_at = now


async def view(session: AsyncSession, box: SecretBox) -> dict[str, Any]:
    """The connection as the API shows it: never a secret, only whether one is set."""
    repo = CrmRepository(session)
    row = await repo.connector(SYSTEM)
    if row is None:
        raise LookupError("HubSpot is not configured; PUT /v1/crm/hubspot first")
    config = HubSpotConfig.of(row.enabled, row.config, box)
    endpoint = await repo.connector_endpoint(SYSTEM)
    return {
        "system": SYSTEM,
        "enabled": row.enabled,
        "access_token_set": bool(config.access_token),
        "client_secret_set": bool(config.client_secret),
        "base_url": config.base_url,
        "public_base_url": config.public_base_url or None,
        "stages": config.stages,
        "endpoint_id": endpoint.id if endpoint else None,
        "owners": await repo.owners(SYSTEM),
        "updated_at": row.updated_at.isoformat(),
    }


async def set_owner(rt: RoutingContext, session: AsyncSession, rep_id: str, owner_id: str | None) -> dict[str, str]:
    """Map a rep to a HubSpot owner id (None unmaps); LookupError for a rep not on the roster."""
    roster = await rt.roster(session)
    if roster.rep(rep_id) is None:
        raise LookupError(f"no rep {rep_id!r} on the roster")
    repo = CrmRepository(session)
    await repo.set_owner(SYSTEM, rep_id, owner_id)
    return await repo.owners(SYSTEM)


async def fetch_owners(db: Database, http: httpx.AsyncClient, box: SecretBox) -> list[dict[str, Any]]:
    """HubSpot's owners, all pages (outside any transaction); LookupError when HubSpot is not configured."""
    async with db.read() as session:
        config = await load_config(CrmRepository(session), box)
    if config is None or not config.access_token:
        raise LookupError("HubSpot is not configured with an access token; PUT /v1/crm/hubspot first")
    return await HubSpotClient(http, base_url=config.base_url, access_token=config.access_token).owners()


async def ensure_properties(db: Database, http: httpx.AsyncClient, box: SecretBox) -> list[str]:
    """Create Handoff's contact properties in HubSpot where missing (outside any transaction); the names created.
    The first delivery does it too: this is for setting up ahead, and for seeing that the token may."""
    async with db.read() as session:
        config = await load_config(CrmRepository(session), box)
    if config is None or not config.access_token:
        raise LookupError("HubSpot is not configured with an access token; PUT /v1/crm/hubspot first")
    return await HubSpotClient(http, base_url=config.base_url, access_token=config.access_token).ensure_properties()


async def import_owners(rt: RoutingContext, session: AsyncSession, owners: list[dict[str, Any]]) -> dict[str, Any]:
    """Map every rep whose email is a HubSpot owner's (case-insensitive); reps already mapped are remapped."""
    roster = await rt.roster(session)
    by_email = {str(o.get("email") or "").strip().lower(): str(o["id"]) for o in owners if o.get("id")}
    repo = CrmRepository(session)
    mapped: dict[str, str] = {}
    unmatched: list[str] = []
    for rep in roster.reps:
        owner_id = by_email.get(rep.email.strip().lower()) if rep.email else None
        if owner_id is None:
            unmatched.append(rep.id)
            continue
        await repo.set_owner(SYSTEM, rep.id, owner_id)
        mapped[rep.id] = owner_id
    return {"mapped": mapped, "unmatched_reps": unmatched, "owners_seen": len(owners)}


__all__ = ["check_stages", "configure", "ensure_properties", "fetch_owners", "import_owners", "set_owner", "view"]
