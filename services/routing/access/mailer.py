"""Email to reps: on assignment the rep gets the lead's summary and their signed action links; a queued lead goes
to every active rep of its team, each with their own claim link (the first claim wins).

A connector (routing.connectors, format "email"): the message is a delivery like any webhook's, written with the
event in the routing transaction and sent by the webhook sender, so it is retried, replayable and visible on /ops
when the SMTP server refuses it. The rep's address is in the message only: never in a log line or an attempt's
error, which carry the SMTP code and the exception's class. Like chat messages, the email leaves out the lead's
own email and phone (a sent email is out of reach of a later erasure).
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from common.crypto import SecretBox
from routing.access.links import ASSIGNED_ACTIONS, action_links, link_keys
from routing.connectors import ConnectorDeps, connector_outcome
from routing.settings import RoutingSettings
from routing.store import RoutingRepository, WebhookEndpoint
from routing.store.crm import CrmRepository

if TYPE_CHECKING:
    from routing.webhooks.claims import Claim
    from routing.webhooks.outcome import AttemptOutcome

EMAIL = "email"
EVENT_TYPES = ("lead.assigned", "lead.reassigned")


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def compose(
    data: dict[str, Any], rep: dict[str, Any], sender: str, links: list[tuple[str, str]], message_id: str
) -> EmailMessage | None:
    """The email to one rep about one lead.assigned/reassigned event's data: the lead is theirs, or (no rep in the
    data: the lead is queued) waiting to be claimed. None when the rep has no address."""
    address = rep.get("email")
    if not isinstance(address, str) or "@" not in address:
        return None
    queued = not data.get("rep")
    lead, score, sla = _dict(data.get("lead")), _dict(data.get("score")), _dict(data.get("sla"))
    name = lead.get("full_name") or " ".join(str(lead.get(k) or "") for k in ("first_name", "last_name")).strip()
    who = name or f"lead {data.get('lead_id')}"
    claim = f"{who} is waiting in your team's queue: the first rep to claim it gets it."
    lines = [f"Hello {rep.get('name') or rep.get('id')},", "", claim if queued else f"{who} is yours."]
    for label, value in (("Company", lead.get("company")), ("Title", lead.get("job_title"))):
        if value:
            lines.append(f"{label}: {value}")
    if score.get("grade"):
        lines.append(f"Score: {score['grade']}")
    for rule in (score.get("fired") or [])[:8]:
        if isinstance(rule, dict) and (rule.get("reason") or rule.get("id")):
            lines.append(f"  - {rule.get('reason') or rule.get('id')}")
    if sla.get("due_at"):
        lines.append(f"First touch due: {sla['due_at']}")
    if data.get("reason") and not queued:
        lines.append(f"Why you: {data['reason']}")
    if links:
        lines += ["", "Act with one click (each link works once):"]
        lines += [f"{label}: {url}" for label, url in links]
    grade = f" ({score['grade']})" if score.get("grade") else ""
    message = EmailMessage()
    message["Subject"] = f"Lead to claim: {who}{grade}" if queued else f"New lead: {who}{grade}"
    message["From"] = sender
    message["To"] = address
    message["Date"] = format_datetime(datetime.now(UTC))
    # The same on every retry, one per rep: a mail client shows a retried message once.
    message["Message-ID"] = f"<{message_id}.{rep.get('id')}@handoff>"
    message.set_content("\n".join(lines) + "\n")
    return message


class EmailConnector:
    """Sends assignment emails through the configured SMTP server (blocking smtplib, in a thread): to the assigned
    rep, or for a queued lead to every active rep of its team, each with their own claim link."""

    def __init__(self, deps: ConnectorDeps) -> None:
        self._settings = deps.settings
        secret = deps.settings.secret_key.get_secret_value() if deps.settings.secret_key else None
        self._keys = link_keys(secret)
        self._clock = deps.clock
        self._db = deps.db

    async def deliver(self, claim: Claim) -> AttemptOutcome:
        try:
            body = json.loads(claim.payload)
        except ValueError:
            return connector_outcome("refused", error="the stored body is not JSON")
        data = _dict(body.get("data")) if body.get("type") in EVENT_TYPES else {}
        messages = [
            message
            for rep, links in await self._recipients(data)
            if (message := compose(data, rep, self._settings.smtp_from, links, claim.message_id)) is not None
        ]
        if not messages:
            return connector_outcome("success", response_body="nothing to send (no rep with an address)")
        started = time.monotonic()
        try:
            await asyncio.to_thread(self._send, messages)
        except smtplib.SMTPResponseException as exc:
            return connector_outcome("http_error", status_code=exc.smtp_code, error=f"SMTP {exc.smtp_code}")
        except smtplib.SMTPRecipientsRefused:
            return connector_outcome("http_error", status_code=550, error="SMTP: the recipient was refused")
        except (OSError, smtplib.SMTPException) as exc:
            return connector_outcome("network_error", error=f"SMTP: {type(exc).__name__}")
        return connector_outcome("success", status_code=250, latency_s=time.monotonic() - started)

    async def _recipients(self, data: dict[str, Any]) -> list[tuple[dict[str, Any], list[tuple[str, str]]]]:
        """(rep, their links): the assigned rep with the lead's actions, or a queued lead's team with claim links."""
        lead_id, base = str(data.get("lead_id") or ""), self._settings.webhook_links_base_url
        if not lead_id:
            return []
        rep = _dict(data.get("rep"))
        actions: tuple[str, ...]
        if rep:
            reps, actions = [rep], ASSIGNED_ACTIONS
        elif data.get("outcome") == "queued" and data.get("team_id"):
            async with self._db.read() as session:
                rows = await RoutingRepository(session).reps()
            reps = [
                row.data
                for row in rows
                if row.data.get("team") == data["team_id"] and row.data.get("status", "active") == "active"
            ]
            actions = ("claim",)
        else:
            return []
        now = self._clock()
        opened = [("Open lead", f"{base.rstrip('/')}/v1/leads/{lead_id}")] if base else []

        def links_for(rep_id: str) -> list[tuple[str, str]]:
            return opened + action_links(self._keys, base, lead_id, rep_id, now, actions=actions) if base else []

        return [(r, links_for(str(r.get("id")))) for r in reps]

    def _send(self, messages: list[EmailMessage]) -> None:
        settings = self._settings
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                smtp.login(settings.smtp_username, password)
            for message in messages:
                smtp.send_message(message)

    async def close(self) -> None:
        return None


async def ensure_endpoint(session: AsyncSession, settings: RoutingSettings, box: SecretBox, now: datetime) -> None:
    """With an SMTP host set, the "email" connector endpoint exists and is enabled (created once, at start-up)."""
    if not settings.smtp_host:
        return
    repo = CrmRepository(session)
    url = f"smtp://{settings.smtp_host}:{settings.smtp_port}"
    endpoint = await repo.connector_endpoint(EMAIL)
    if endpoint is None:
        repo.add(
            WebhookEndpoint(
                id=str(uuid.uuid4()),
                url=url,
                description="Email to the assigned rep (routing.access.mailer)",
                event_types=list(EVENT_TYPES),
                format=EMAIL,
                enabled=True,
                secret=box.seal(uuid.uuid4().hex),  # unused (nothing is signed), but the column wants one
                created_at=now,
                updated_at=now,
            )
        )
    elif endpoint.url != url:
        endpoint.url, endpoint.updated_at = url, now
