"""The body an endpoint receives, by its format (pure): Standard Webhooks, a Slack message, or a Teams card.

The stored body is always the Standard Webhooks one (what erasure redacts and replays resend); a slack or teams
endpoint gets it rendered at send time, so a redacted body renders redacted. Only what a rep needs to act goes
into a chat message: the lead's name, company and title, the rep, the score and its reasons, the SLA due time and
links back. No email or phone: a message posted in a channel is out of reach of a later erasure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from common.envelope import dumps, loads

STANDARD, SLACK, TEAMS = "standard", "slack", "teams"
FORMATS = (STANDARD, SLACK, TEAMS)

_TITLES = {
    "lead.assigned": "New lead assigned",
    "lead.reassigned": "Lead reassigned",
    "lead.unassigned": "Lead unassigned",
    "lead.sla_warning": "SLA warning",
    "lead.sla_breached": "SLA breached",
    "lead.resubmitted": "Lead came back",
    "webhook.test": "Test delivery from Handoff",
}
_MAX_REASONS = 8
# Events after which the rep can act on the lead: their messages carry the rep's signed action links.
_ACTIONABLE = ("lead.assigned", "lead.reassigned", "lead.sla_warning")
ActionLinks = Callable[[str, str], list[tuple[str, str]]]  # (lead id, rep id) -> [(label, url)]


class UnknownFormat(ValueError):
    """Not one of FORMATS."""


def check_format(value: str) -> str:
    """The format, if known; raises UnknownFormat naming the choices."""
    if value not in FORMATS:
        raise UnknownFormat(f"unknown format {value!r}; choose from {list(FORMATS)}")
    return value


def render(fmt: str, payload: str, *, links_base_url: str = "", action_links: ActionLinks | None = None) -> str:
    """The body to send for a stored Standard Webhooks `payload`; links go under `links_base_url` when set, and
    `action_links` gives the assigned rep's signed links (routing.access.links) as buttons."""
    if fmt not in (SLACK, TEAMS):
        return payload  # standard, and connectors' formats (routing.connectors read the standard body)
    try:
        body = loads(payload)
    except ValueError:
        body = {}  # never stored by this code; a message that says little beats a delivery that never goes
    facts = _Facts.of(body, links_base_url.rstrip("/"), action_links)
    message = _slack(facts) if fmt == SLACK else _teams(facts)
    return dumps(message).decode("utf-8")


class _Facts:
    """What a chat message says, read defensively from any routing event's data (fields vary by type)."""

    def __init__(self, body: Mapping[str, Any], base: str, action_links: ActionLinks | None = None) -> None:
        data = _dict(body.get("data"))
        lead, rep, score, sla = (_dict(data.get(k)) for k in ("lead", "rep", "score", "sla"))
        self.event_type = str(body.get("type") or "event")
        plain_type = self.event_type.removeprefix("lead.").replace("_", " ")
        self.title = _TITLES.get(self.event_type) or f"Lead {plain_type}"
        self.lead_id = _text(data.get("lead_id"))
        name = _text(lead.get("full_name")) or " ".join(
            part for part in (_text(lead.get("first_name")), _text(lead.get("last_name"))) if part
        )
        self.who = name or (f"lead {self.lead_id}" if self.lead_id else "")
        self.company = " · ".join(part for part in (_text(lead.get("job_title")), _text(lead.get("company"))) if part)
        self.rep = _text(rep.get("name")) or _text(rep.get("id")) or _text(data.get("rep_id"))
        self.grade = _text(score.get("grade"))
        if self.grade and score.get("fit") is not None:
            self.grade += f" (fit {score.get('fit')}, intent {score.get('intent')})"
        fired = [_dict(rule) for rule in score.get("fired") or [] if isinstance(rule, Mapping)]
        self.reasons = [_reason(rule) for rule in fired[:_MAX_REASONS]]
        self.due = _when(sla.get("due_at") or data.get("due_at"))
        self.why = _text(data.get("reason") or data.get("message"))
        self.links: list[tuple[str, str]] = []
        if base and self.lead_id:
            self.links.append(("Open lead", f"{base}/v1/leads/{self.lead_id}"))
        rep_id = _text(rep.get("id")) or _text(data.get("rep_id"))
        if action_links is not None and self.lead_id and rep_id and self.event_type in _ACTIONABLE:
            self.links.extend(action_links(self.lead_id, rep_id))
        if base:
            self.links.append(("Ops dashboard", f"{base}/ops"))

    @classmethod
    def of(cls, body: Any, base: str, action_links: ActionLinks | None = None) -> _Facts:
        return cls(_dict(body), base, action_links)

    def headline(self) -> str:
        parts = [f"{self.title}: {self.who}" if self.who else self.title]
        if self.rep:
            parts.append(f"rep {self.rep}")
        if self.due:
            parts.append(f"first touch due {self.due[1]}")
        return ", ".join(parts)


def _slack(f: _Facts) -> dict[str, Any]:
    """Block Kit: header, the lead, fields, the score's reasons, context, link buttons; `text` is the fallback
    Slack shows in notifications (and refuses a message without: 400 no_text)."""
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain(f.title, 150)}]
    lines = [f"*{_esc(f.who)}*" if f.who else "", _esc(f.company), _esc(f.why)]
    fields = []
    if f.rep:
        fields.append(_md(f"*Rep*\n{_esc(f.rep)}"))
    if f.grade:
        fields.append(_md(f"*Score*\n{_esc(f.grade)}"))
    if f.due:
        fields.append(_md(f"*SLA due*\n<!date^{f.due[0]}^{{date_short_pretty}} {{time}}|{f.due[1]}>"))
    section: dict[str, Any] = {"type": "section", "text": _md("\n".join(line for line in lines if line) or f.title)}
    if fields:
        section["fields"] = fields
    blocks.append(section)
    if f.reasons:
        bullets = "\n".join(f"• {_esc(reason)}" for reason in f.reasons)
        blocks.append({"type": "section", "text": _md(f"*Why this score*\n{bullets}")})
    context = f"{f.event_type}" + (f" · lead {f.lead_id}" if f.lead_id else "")
    blocks.append({"type": "context", "elements": [_md(_esc(context))]})
    if f.links:
        buttons = [
            {"type": "button", "text": _plain(label, 75), "url": url, "action_id": f"handoff_link_{i}"}
            for i, (label, url) in enumerate(f.links)
        ]
        blocks.append({"type": "actions", "elements": buttons})
    return {"text": _esc(f.headline())[:3000], "blocks": blocks}


def _teams(f: _Facts) -> dict[str, Any]:
    """An Adaptive Card inside a `message` with `attachments`, the envelope Teams incoming webhooks take."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": f.title, "size": "Medium", "weight": "Bolder", "wrap": True},
    ]
    if f.who:
        body.append({"type": "TextBlock", "text": f.who, "weight": "Bolder", "wrap": True})
    if f.company:
        body.append({"type": "TextBlock", "text": f.company, "isSubtle": True, "spacing": "None", "wrap": True})
    facts = [{"title": title, "value": value} for title, value in (("Rep", f.rep), ("Score", f.grade)) if value]
    if f.due:
        facts.append({"title": "SLA due", "value": f.due[1]})
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    if f.why:
        body.append({"type": "TextBlock", "text": f.why, "wrap": True})
    if f.reasons:
        body.append({"type": "TextBlock", "text": "Why this score", "weight": "Bolder", "wrap": True})
        body.append({"type": "TextBlock", "text": "\n".join(f"- {reason}" for reason in f.reasons), "wrap": True})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
    }
    if f.links:
        card["actions"] = [{"type": "Action.OpenUrl", "title": label, "url": url} for label, url in f.links]
    return {
        "type": "message",
        "summary": f.headline(),
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _reason(rule: Mapping[str, Any]) -> str:
    points = rule.get("points")
    sign = f"{points:+d} {rule.get('score', '')}: " if isinstance(points, int) else ""
    return sign + (_text(rule.get("reason")) or _text(rule.get("id")))


def _when(value: Any) -> tuple[int, str] | None:
    """(Unix seconds, `YYYY-MM-DD HH:MM UTC`) of an ISO time, or None."""
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return int(at.timestamp()), at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _esc(text: str) -> str:
    """Slack's mrkdwn escapes: only &, < and > (so a lead's name cannot forge a link or a mention)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text[:2000]}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit] or " ", "emoji": True}
