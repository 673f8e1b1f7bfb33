"""HubSpot outbound: on `lead.assigned` and `lead.reassigned`, upsert the lead's contact by email with its owner
(`hubspot_owner_id`, mapped from the rep) and Handoff's context (grade, reasons, first-touch due time).

A delivery of the HubSpot connector endpoint (format "hubspot") reaches `HubSpotConnector.deliver` through the
webhook sender, so each upsert is durable and retried like a webhook (429 and its Retry-After honoured, failures on
/ops). After an upsert the lead is linked to its contact id (`crm_links`), which is how inbound events find it.
Outbound calls go through the webhook egress policy (`common.egress`): https only in production, no private or
loopback addresses unless allowed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from common.crypto import SecretBox, SecretKeyError
from common.egress import guarded_transport
from common.envelope import loads
from routing.connectors.base import ConnectorDeps, connector_outcome
from routing.connectors.hubspot_client import DEFAULT_BASE_URL, HubSpotClient, HubSpotError
from routing.store.crm import CrmRepository
from routing.webhooks.address import webhook_address_policy
from routing.webhooks.claims import Claim
from routing.webhooks.outcome import AttemptOutcome

log = structlog.get_logger(__name__)

SYSTEM = "hubspot"
EVENT_TYPES = ("lead.assigned", "lead.reassigned")
# lifecyclestage / hs_lead_status value -> the rep action it means; replaced as a whole by a configured mapping.
DEFAULT_STAGES: dict[str, dict[str, str]] = {
    "lifecyclestage": {"customer": "convert", "evangelist": "convert"},
    "hs_lead_status": {"UNQUALIFIED": "disqualify"},
}
_MAX_REASONS = 10


@dataclass(frozen=True)
class HubSpotConfig:
    """The HubSpot connection as stored (`connectors` row "hubspot"), secrets revealed."""

    enabled: bool = True
    access_token: str = ""
    client_secret: str = ""
    base_url: str = DEFAULT_BASE_URL
    public_base_url: str = ""  # the origin HubSpot calls (behind a proxy): it signs the full URL
    stages: dict[str, dict[str, str]] = field(default_factory=lambda: dict(DEFAULT_STAGES))

    @classmethod
    def of(cls, enabled: bool, config: Mapping[str, Any], box: SecretBox) -> HubSpotConfig:
        """Raises SecretKeyError when a sealed secret cannot be read with the configured keys."""
        return cls(
            enabled=enabled,
            access_token=box.reveal(config["access_token"]) if config.get("access_token") else "",
            client_secret=box.reveal(config["client_secret"]) if config.get("client_secret") else "",
            base_url=str(config.get("base_url") or DEFAULT_BASE_URL),
            public_base_url=str(config.get("public_base_url") or ""),
            stages=config.get("stages") or dict(DEFAULT_STAGES),
        )


async def load_config(repo: CrmRepository, box: SecretBox) -> HubSpotConfig | None:
    row = await repo.connector(SYSTEM)
    return HubSpotConfig.of(row.enabled, row.config, box) if row is not None else None


def contact_properties(data: Mapping[str, Any], owner_id: str | None) -> dict[str, str]:
    """The contact's properties for an assignment event: names as given, the owner, Handoff's context (pure).

    A lead with no rep (queued, held, nurture) leaves HubSpot with no owner; a rep with no mapped owner leaves the
    owner as it was (the attempt's record says why)."""
    lead = _dict(data.get("lead"))
    score = _dict(data.get("score"))
    sla = _dict(data.get("sla"))
    props: dict[str, str] = {"handoff_lead_id": str(data.get("lead_id") or "")}
    for ours, theirs in (("first_name", "firstname"), ("last_name", "lastname"), ("company", "company")):
        if isinstance(lead.get(ours), str) and lead[ours].strip():
            props[theirs] = lead[ours].strip()
    if isinstance(lead.get("job_title"), str) and lead["job_title"].strip():
        props["jobtitle"] = lead["job_title"].strip()
    if owner_id:
        props["hubspot_owner_id"] = owner_id
    elif not _dict(data.get("rep")).get("id"):
        props["hubspot_owner_id"] = ""  # HubSpot clears a property set to the empty string
    if score.get("grade"):
        props["handoff_grade"] = str(score["grade"])
    fired = [_dict(rule) for rule in score.get("fired") or [] if isinstance(rule, Mapping)]
    reasons = [str(rule.get("reason") or rule.get("id") or "") for rule in fired[:_MAX_REASONS]]
    if any(reasons):
        props["handoff_reasons"] = "; ".join(r for r in reasons if r)
    if sla.get("due_at"):
        props["handoff_sla_due_at"] = str(sla["due_at"])
    return props


class HubSpotConnector:
    """Delivers assignment events to HubSpot as contact upserts; one guarded httpx client per sender."""

    def __init__(self, deps: ConnectorDeps) -> None:
        self._deps = deps
        self._box = deps.settings.secret_box()
        self._http: httpx.AsyncClient | None = None
        self._properties_ready: set[tuple[str, str]] = set()  # (base URL, token) whose properties exist

    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            settings = self._deps.settings
            self._http = httpx.AsyncClient(
                transport=guarded_transport(webhook_address_policy(settings), self._deps.resolver),
                timeout=settings.webhook_timeout_s,
                follow_redirects=False,
                headers={"user-agent": settings.webhook_user_agent},
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def deliver(self, claim: Claim) -> AttemptOutcome:
        started = time.perf_counter()
        try:
            body = loads(claim.payload)
        except ValueError:
            return connector_outcome("error", error="the stored body is not JSON")
        data = _dict(body.get("data"))
        if body.get("type") not in EVENT_TYPES:
            return connector_outcome("success", status_code=204, response_body="not an assignment: nothing to write")
        lead_id = str(data.get("lead_id") or "")
        rep_id = _dict(data.get("rep")).get("id")
        async with self._deps.db.read() as session:
            repo = CrmRepository(session)
            try:
                config = await load_config(repo, self._box)
            except SecretKeyError as exc:
                return connector_outcome("error", error=f"the HubSpot token cannot be decrypted: {exc}")
            owner_id = await repo.owner_of(SYSTEM, str(rep_id)) if rep_id else None
            latest = await repo.latest_assignment_id(lead_id) if lead_id else None
        # Deliveries run concurrently and retry: an older assignment sent after a newer one would give the contact
        # back its old owner. The newer one's own delivery writes the owner that holds now.
        assignment_id = data.get("assignment_id")
        if isinstance(assignment_id, int) and latest is not None and assignment_id < latest:
            return connector_outcome("success", status_code=204, response_body="superseded by a later assignment")
        if config is None or not config.enabled:
            return connector_outcome("error", error="HubSpot is not configured or disabled (PUT /v1/crm/hubspot)")
        email = _dict(data.get("lead")).get("email")
        if not isinstance(email, str) or "@" not in email:
            # An erased lead's body has no person left, and a lead without an email has no contact to upsert.
            return connector_outcome("success", status_code=204, response_body="no email on the lead: skipped")
        client = HubSpotClient(self.http(), base_url=config.base_url, access_token=config.access_token)
        try:
            key = (config.base_url, config.access_token)
            if key not in self._properties_ready:
                await client.ensure_properties()
                self._properties_ready.add(key)
            contact_id = await client.upsert_contact(email.strip().lower(), contact_properties(data, owner_id))
        except HubSpotError as exc:
            result = "http_error" if exc.status is not None else "network_error"
            return connector_outcome(
                result,
                status_code=exc.status,
                latency_s=time.perf_counter() - started,
                error=str(exc),
                retry_after_s=exc.retry_after_s,
            )
        async with self._deps.db.transaction() as session:
            await CrmRepository(session).save_link(SYSTEM, lead_id, contact_id, owner_id, self._deps.clock())
        note = {"contact_id": contact_id, "owner_id": owner_id}
        if rep_id and owner_id is None:
            note["warning"] = f"rep {rep_id} has no HubSpot owner mapping: the contact was written without owner"
        log.info("hubspot_contact_upserted", lead_id=lead_id, contact_id=contact_id, owner_id=owner_id)
        return connector_outcome(
            "success", status_code=200, latency_s=time.perf_counter() - started, response_body=json.dumps(note)
        )


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}
