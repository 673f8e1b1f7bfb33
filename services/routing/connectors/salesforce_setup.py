"""Setting Salesforce up (use cases; the caller's session, the entrypoint commits): the org's settings with the
client secret sealed, the delivery endpoint the connector sends through, the rep <-> User mapping and its import.

Saving the settings the first time also creates the webhook endpoint of format "salesforce", subscribed to
lead.assigned and lead.reassigned, so assignments are written as deliveries in routing's own transaction from
then on; the poller's cursor starts at that moment.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from common.crypto import SecretBox, SecretKeyError
from routing.connectors.salesforce import EVENTS, SYSTEM, SalesforceConfig
from routing.connectors.salesforce_api import SalesforceClient, soql_string
from routing.settings import RoutingSettings
from routing.store import WebhookEndpoint
from routing.store.crm import CrmRepository
from routing.store.salesforce import SalesforceRepository
from routing.usecases.context import RoutingContext
from routing.webhooks.signing import new_secret

USER_ID = re.compile(r"^005[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")
IMPORT_BATCH = 100  # emails per SOQL IN list: the query stays far below SOQL's 100,000-character limit


class SetupError(ValueError):
    """A setting that cannot be saved: `field` names it, the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(reason)


@dataclass(frozen=True)
class SalesforceSettingsIn:
    """What an admin sets; a secret left None keeps the stored one."""

    login_url: str
    client_id: str
    client_secret: str | None
    api_version: str
    upsert_key: str
    context_fields: Mapping[str, str]
    statuses: Mapping[str, str]
    lead_source: str | None
    enabled: bool
    auth_flow: str = "client_credentials"
    username: str | None = None
    private_key: str | None = None
    audience: str = "https://login.salesforce.com"


SECRETS = ("client_secret", "private_key")


def view(stored: Mapping[str, Any] | None, enabled: bool, endpoint_id: str | None) -> dict[str, Any]:
    """The settings as shown: never a secret, only whether each is set."""
    if stored is None:
        return {"configured": False}
    shown = {k: v for k, v in stored.items() if k not in SECRETS}
    is_set = {f"{name}_set": bool(stored.get(name)) for name in SECRETS}
    return {"configured": True, "enabled": enabled, **shown, **is_set, "endpoint_id": endpoint_id}


def check_private_key(pem: str) -> None:
    """An unencrypted PEM RSA private key (what the JWT bearer flow signs with); SetupError otherwise."""
    # Imported here, on this rare path, so they are not part of routing's start-up.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SetupError("private_key", "not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise SetupError("private_key", "Salesforce signs with RS256: an RSA key of at least 2048 bits")


def _sealed(name: str, given: str | None, stored: Mapping[str, Any] | None, box: SecretBox, why: str) -> str:
    """The secret to store: the given one sealed, else the stored one; SetupError when neither exists."""
    if given is not None:
        return box.seal(given)
    if stored and stored.get(name):
        return str(stored[name])
    raise SetupError(name, why)


async def save_settings(
    session: AsyncSession, settings: RoutingSettings, values: SalesforceSettingsIn, now: datetime
) -> dict[str, Any]:
    """Store the settings (secrets sealed) and make sure the delivery endpoint exists and follows `enabled`."""
    repo = SalesforceRepository(session)
    box = settings.secret_box()
    existing = await repo.settings(SYSTEM)
    stored = existing.config if existing else None
    config = SalesforceConfig(
        login_url=values.login_url.rstrip("/"),
        client_id=values.client_id,
        api_version=values.api_version,
        upsert_key=values.upsert_key,
        context_fields=dict(values.context_fields),
        statuses=dict(values.statuses),
        lead_source=values.lead_source,
        auth_flow=values.auth_flow,
        username=values.username,
        audience=values.audience,
    ).public()
    if values.auth_flow == "jwt_bearer":
        if not values.username:
            raise SetupError("username", "the JWT bearer flow names the integration user's username")
        if values.private_key is not None:
            check_private_key(values.private_key)
        config["private_key"] = _sealed("private_key", values.private_key, stored, box, "required for jwt_bearer")
    else:
        why = "required the first time Salesforce is set up (client credentials flow)"
        config["client_secret"] = _sealed("client_secret", values.client_secret, stored, box, why)
    await repo.save_settings(SYSTEM, config, values.enabled, now, cursor_from=now)
    endpoint = await repo.delivery_endpoint(SYSTEM)
    if endpoint is None:
        endpoint = WebhookEndpoint(
            id=str(uuid.uuid4()),
            url=config["login_url"],
            description="Salesforce connector: Leads written through the Salesforce REST API",
            event_types=list(EVENTS),
            format=SYSTEM,
            enabled=values.enabled,
            secret=box.seal(new_secret()),  # never used to sign: the connector calls an API, not a receiver
            created_at=now,
            updated_at=now,
        )
        repo.add(endpoint)
    else:
        endpoint.url, endpoint.updated_at = config["login_url"], now
        if endpoint.enabled != values.enabled:
            endpoint.enabled = values.enabled
            endpoint.disabled_reason = None if values.enabled else "manual"
            endpoint.disabled_at = None if values.enabled else now
    return view(config, values.enabled, endpoint.id)


async def read_settings(session: AsyncSession) -> dict[str, Any]:
    repo = SalesforceRepository(session)
    row = await repo.settings(SYSTEM)
    endpoint = await repo.delivery_endpoint(SYSTEM)
    return view(row.config if row else None, bool(row and row.enabled), endpoint.id if endpoint else None)


async def owners(session: AsyncSession) -> dict[str, str]:
    """rep id -> Salesforce User Id."""
    return await CrmRepository(session).owners(SYSTEM)


async def set_owners(rt: RoutingContext, session: AsyncSession, mapping: Mapping[str, str | None]) -> dict[str, str]:
    """Map reps to Salesforce User Ids (None unmaps); ValueError naming an unknown rep or a malformed id."""
    roster = await rt.roster(session)
    for rep_id, user_id in mapping.items():
        if roster.rep(rep_id) is None:
            raise SetupError(f"owners.{rep_id}", "no rep with this id in the roster")
        if user_id is not None and not USER_ID.match(user_id):
            raise SetupError(f"owners.{rep_id}", "not a Salesforce User Id (005 and 12 or 15 more letters/digits)")
    repo = CrmRepository(session)
    for rep_id, user_id in mapping.items():
        await repo.set_owner(SYSTEM, rep_id, user_id)
    return await repo.owners(SYSTEM)


async def stored_config(session: AsyncSession, settings: RoutingSettings) -> SalesforceConfig:
    """The settings with the secret revealed, for a call to the org; SetupError when there are none."""
    row = await SalesforceRepository(session).settings(SYSTEM)
    if row is None:
        raise SetupError("salesforce", "Salesforce is not set up yet (PUT /v1/crm/salesforce)")
    try:
        return SalesforceConfig.from_stored(row.config, settings.secret_box())
    except SecretKeyError as exc:
        raise SetupError("client_secret", str(exc)) from None


async def rep_emails(rt: RoutingContext, session: AsyncSession) -> dict[str, str]:
    """lower-cased email -> rep id, for every rep with an email."""
    roster = await rt.roster(session)
    return {rep.email.lower(): rep.id for rep in roster.reps if rep.email}


async def match_users(client: SalesforceClient, emails: Mapping[str, str]) -> dict[str, str]:
    """rep id -> the active Salesforce User with the rep's email (User.Email matched through SOQL, in batches)."""
    found: dict[str, str] = {}
    listed = sorted(emails)
    for start in range(0, len(listed), IMPORT_BATCH):
        batch = ", ".join(soql_string(email) for email in listed[start : start + IMPORT_BATCH])
        users = await client.query(f"SELECT Id, Email FROM User WHERE IsActive = true AND Email IN ({batch})")  # noqa: S608 (SOQL, escaped)
        for user in users:
            rep_id = emails.get(str(user.get("Email") or "").lower())
            if rep_id and user.get("Id"):
                found[rep_id] = str(user["Id"])
    return found


async def save_imported(session: AsyncSession, matched: Mapping[str, str]) -> dict[str, str]:
    repo = CrmRepository(session)
    for rep_id, user_id in matched.items():
        await repo.set_owner(SYSTEM, rep_id, user_id)
    return await repo.owners(SYSTEM)
