"""Salesforce, outbound: an assignment upserts a Lead with `OwnerId` mapped from the rep; a reassignment moves it.

The connector is a webhook endpoint of format "salesforce" (routing.connectors): deliveries are written with the
event in routing's transaction and retried, replayed and shown on /ops by the webhook machinery; this module only
makes the attempt. Upsert by an external id field (`PATCH /sobjects/Lead/<Field__c>/<lead id>`, idempotent), or
by email (a SOQL look-up, then create or update). The lead's Salesforce Id is linked (crm_links) so a reassignment
updates that record and the poller (routing.connectors.salesforce_poll) finds the lead of a Task.

Settings (the `connectors` row "salesforce", secrets sealed with common.crypto):
    login_url, client_id, client_secret, api_version, upsert_key ("email" or an external id field),
    context_fields {fact: Lead field} for grade, score, reasons, sla_due, lead_id, and
    statuses {Lead Status value: "convert" | "disqualify"} for the poller.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from common.crypto import SecretBox, SecretKeyError
from common.egress import guarded_transport
from common.envelope import loads
from routing.connectors.base import ConnectorDeps, connector_outcome
from routing.connectors.salesforce_api import Credentials, SalesforceClient, SalesforceError, soql_string
from routing.settings import RoutingSettings
from routing.store.crm import CrmRepository
from routing.store.salesforce import SalesforceRepository
from routing.webhooks.address import webhook_address_policy

if TYPE_CHECKING:
    from routing.webhooks.claims import Claim
    from routing.webhooks.outcome import AttemptOutcome

SYSTEM = "salesforce"
EVENTS = ("lead.assigned", "lead.reassigned")
CONTEXT_FACTS = ("lead_id", "grade", "score", "reasons", "sla_due", "rule")
SIGNAL_KINDS = ("convert", "disqualify")
NOT_PROVIDED = "[not provided]"  # what Salesforce's own Web-to-Lead writes into a required field left empty
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SalesforceConfig:
    """The org and how Handoff writes to it; the secrets (client secret, private key) are clear only in memory."""

    login_url: str
    client_id: str
    client_secret: str = ""
    api_version: str = "60.0"
    upsert_key: str = "email"
    context_fields: Mapping[str, str] = field(default_factory=dict)
    statuses: Mapping[str, str] = field(default_factory=dict)
    lead_source: str | None = "Handoff"
    auth_flow: str = "client_credentials"  # or jwt_bearer
    username: str | None = None
    private_key: str | None = None
    audience: str = "https://login.salesforce.com"

    @property
    def credentials(self) -> Credentials:
        jwt_bearer = self.auth_flow == "jwt_bearer"
        return Credentials(
            self.login_url,
            self.client_id,
            "" if jwt_bearer else self.client_secret,
            self.api_version,
            username=self.username if jwt_bearer else None,
            private_key=self.private_key if jwt_bearer else None,
            audience=self.audience,
        )

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any], box: SecretBox) -> SalesforceConfig:
        """From the `connectors` row's JSON; SecretKeyError when a secret cannot be decrypted."""
        secret, key = stored.get("client_secret"), stored.get("private_key")
        return cls(
            login_url=str(stored["login_url"]),
            client_id=str(stored["client_id"]),
            client_secret=box.reveal(str(secret)) if secret else "",
            api_version=str(stored.get("api_version") or "60.0"),
            upsert_key=str(stored.get("upsert_key") or "email"),
            context_fields=dict(stored.get("context_fields") or {}),
            statuses=dict(stored.get("statuses") or {}),
            lead_source=stored.get("lead_source", "Handoff"),
            auth_flow=str(stored.get("auth_flow") or "client_credentials"),
            username=stored.get("username"),
            private_key=box.reveal(str(key)) if key else None,
            audience=str(stored.get("audience") or "https://login.salesforce.com"),
        )

    def public(self) -> dict[str, Any]:
        """What is stored in clear (the secrets are added sealed by the caller)."""
        return {
            "login_url": self.login_url,
            "client_id": self.client_id,
            "api_version": self.api_version,
            "upsert_key": self.upsert_key,
            "context_fields": dict(self.context_fields),
            "statuses": dict(self.statuses),
            "lead_source": self.lead_source,
            "auth_flow": self.auth_flow,
            "username": self.username,
            "audience": self.audience,
        }


def _text(value: Any, limit: int) -> str | None:
    return str(value)[:limit] if value not in (None, "") else None


def lead_fields(data: Mapping[str, Any], config: SalesforceConfig) -> dict[str, Any]:
    """The Lead's standard fields from the assignment's `lead` (pure); LastName and Company are required by
    Salesforce, so an empty one is written as Web-to-Lead does. Empty values are left out, never blanked."""
    lead = data.get("lead") or {}
    fields: dict[str, Any] = {
        "FirstName": _text(lead.get("first_name"), 40),
        "LastName": _text(lead.get("last_name"), 80) or _text(lead.get("full_name"), 80) or NOT_PROVIDED,
        "Company": _text(lead.get("company"), 255) or NOT_PROVIDED,
        "Email": _text(lead.get("email"), 80),
        "Phone": _text(lead.get("phone"), 40),
        "Title": _text(lead.get("job_title"), 128),
        "Website": _text(lead.get("website"), 255),
        "City": _text(lead.get("city"), 40),
        "State": _text(lead.get("region"), 80),
        "PostalCode": _text(lead.get("postal_code"), 20),
        "Country": _text(lead.get("country"), 80),
        "LeadSource": config.lead_source,
    }
    return {name: value for name, value in fields.items() if value is not None}


def context_values(data: Mapping[str, Any], config: SalesforceConfig) -> dict[str, Any]:
    """Handoff's context in the Lead fields the org configured for it (pure): grade, score, reasons, SLA due..."""
    score = data.get("score") or {}
    sla = data.get("sla") or {}
    reasons = "; ".join(str(r.get("label") or r.get("id") or "") for r in score.get("fired") or [] if r)
    facts = {
        "lead_id": data.get("lead_id"),
        "grade": score.get("grade"),
        "score": score.get("fit"),
        "reasons": reasons[:1000] or None,
        "sla_due": sla.get("due_at"),
        "rule": data.get("rule_id"),
    }
    return {target: facts[fact] for fact, target in config.context_fields.items() if fact in facts}


def new_http_client(settings: RoutingSettings, deps: ConnectorDeps) -> httpx.AsyncClient:
    """The client Salesforce calls go through: the webhook egress policy, no redirects, no environment proxies."""
    transport = guarded_transport(webhook_address_policy(settings), deps.resolver)
    return httpx.AsyncClient(transport=transport, timeout=settings.webhook_timeout_s, follow_redirects=False)


class ClientCache:
    """One SalesforceClient per set of credentials (a config change builds a new one, with a new token)."""

    def __init__(self, deps: ConnectorDeps) -> None:
        self._deps = deps
        self._http: httpx.AsyncClient | None = None
        self._client: SalesforceClient | None = None

    def get(self, config: SalesforceConfig) -> SalesforceClient:
        if self._http is None:
            self._http = new_http_client(self._deps.settings, self._deps)
        if self._client is None or self._client.credentials != config.credentials:
            self._client = SalesforceClient(self._http, config.credentials, clock=self._deps.clock)
        return self._client

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def failure_outcome(exc: SalesforceError, settings: RoutingSettings, started: float) -> AttemptOutcome:
    """A failed call as an attempt: limits wait for Retry-After or the configured pause; the rest follow the
    retry schedule. The error names the call and Salesforce's errorCode, never a value."""
    retry_after = exc.retry_after_s
    if exc.rate_limited and retry_after is None:
        retry_after = settings.salesforce_limit_pause_s
    result = "http_error"
    if exc.status is None:
        result = "refused" if exc.code == "REFUSED" else "network_error"
    return connector_outcome(
        result,
        status_code=exc.status,
        latency_s=time.perf_counter() - started,
        error=f"salesforce {exc}",
        retry_after_s=retry_after,
    )


class SalesforceConnector:
    """Delivers lead.assigned and lead.reassigned to Salesforce; any other event is acknowledged untouched.

    The owner written is the lead's rep when the attempt is made, not the event's: deliveries retry and replay
    out of order, and an older one must not hand the record back to a rep the lead has left."""

    def __init__(self, deps: ConnectorDeps) -> None:
        self._deps = deps
        self._box = deps.settings.secret_box()
        self._clients = ClientCache(deps)

    async def close(self) -> None:
        await self._clients.close()

    async def deliver(self, claim: Claim) -> AttemptOutcome:
        started = time.perf_counter()
        try:
            body = loads(claim.payload)
        except ValueError:
            body = {}
        data = body.get("data") if isinstance(body, Mapping) else None
        if body.get("type") not in EVENTS or not isinstance(data, Mapping) or not data.get("lead_id"):
            return connector_outcome("success", status_code=200, response_body="nothing to write to Salesforce")
        rep = data.get("rep") or {}
        rep_id = rep.get("id") if isinstance(rep, Mapping) else None
        if not rep_id:
            return connector_outcome("success", status_code=200, response_body="no rep: Salesforce left as it is")
        lead_id = str(data["lead_id"])
        async with self._deps.db.read() as session:
            setup = await SalesforceRepository(session).setup(SYSTEM, lead_id, str(rep_id))
        if setup["link"] is None and not data.get("lead"):
            return connector_outcome("success", status_code=200, response_body="erased and never written: skipped")
        if setup["rep_id"] is None:
            return connector_outcome("success", status_code=200, response_body="no rep now: Salesforce left as it is")
        if setup["config"] is None or not setup["enabled"]:
            return connector_outcome("error", error="salesforce is not configured or is disabled")
        if setup["owner"] is None:
            return connector_outcome("error", error=f"rep {setup['rep_id']} has no Salesforce user mapped (owners)")
        try:
            config = SalesforceConfig.from_stored(setup["config"], self._box)
        except (SecretKeyError, KeyError) as exc:
            return connector_outcome("error", error=f"salesforce settings unreadable: {type(exc).__name__}")
        client = self._clients.get(config)
        try:
            stale = setup["rep_id"] != rep_id  # an older event: its context (SLA due, grade) is no longer the lead's
            record_id, created = await self._write(client, config, data, setup["owner"], setup["link"], stale=stale)
        except SalesforceError as exc:
            log.warning("salesforce_delivery_failed", lead_id=lead_id, status=exc.status, code=exc.code)
            return failure_outcome(exc, self._deps.settings, started)
        async with self._deps.db.transaction() as session:
            await CrmRepository(session).save_link(SYSTEM, lead_id, record_id, setup["owner"], self._deps.clock())
        log.info("salesforce_lead_written", lead_id=lead_id, record_id=record_id, created=created)
        return connector_outcome(
            "success",
            status_code=201 if created else 200,
            latency_s=time.perf_counter() - started,
            response_body=f"Lead {record_id} {'created' if created else 'updated'}",
        )

    async def _write(
        self,
        client: SalesforceClient,
        config: SalesforceConfig,
        data: Mapping[str, Any],
        owner_id: str,
        linked_id: str | None,
        *,
        stale: bool = False,
    ) -> tuple[str, bool]:
        """Create or update the lead's record; (its Id, created?)."""
        context = {} if stale else context_values(data, config)
        if linked_id is not None:
            # Known record (a reassignment, a replay, an erased lead): only the owner and the context move.
            await client.update("Lead", linked_id, {"OwnerId": owner_id, **context})
            return linked_id, False
        fields = {**lead_fields(data, config), **context, "OwnerId": owner_id}
        if config.upsert_key != "email":
            fields.pop(config.upsert_key, None)  # the key travels in the URL, not the body
            return await client.upsert("Lead", config.upsert_key, str(data["lead_id"]), fields)
        email = fields.get("Email")
        if email:
            found = await client.query(
                f"SELECT Id FROM Lead WHERE Email = {soql_string(str(email))} AND IsConverted = false "  # noqa: S608 (SOQL, escaped)
                "ORDER BY SystemModstamp DESC LIMIT 1"
            )
            if found and found[0].get("Id"):
                record_id = str(found[0]["Id"])
                await client.update("Lead", record_id, fields)
                return record_id, False
        return await client.create("Lead", fields), True


def connector(deps: ConnectorDeps) -> SalesforceConnector:
    """The registry's factory (routing.connectors)."""
    return SalesforceConnector(deps)
