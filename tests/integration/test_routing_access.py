"""Who may do what on routing (issue 15 item 3), in-process on SQLite and PostgreSQL: rep tokens scoped to their own
leads, staff roles on rules and roster, signed single-use action links, and the audit trail."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from routing.access import acting, links
from routing.app import create_app
from routing.webhooks.formats import render
from routing.webhooks.signing import webhook_body
from tests.support.routing import RULES, scored, service_settings
from tests.support.smtp_server import smtp_server
from tests.support.stack import ADMIN, wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

OPS_TOKEN = "test-ops-token-0123456789"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}


@dataclass
class App:
    app: FastAPI
    client: httpx.AsyncClient

    async def route(self) -> dict[str, Any]:
        """A scored lead routed as the consumer would; its story read back."""
        event = scored()
        async with self.app.state.runtime.db.transaction() as session:
            await self.app.state.router.on_scored(session, event)
        return await self.lead(event.subject)

    async def lead(self, lead_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/leads/{lead_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()

    async def token(self, rep_id: str | None = None, role: str | None = None, name: str = "t") -> dict[str, str]:
        path = f"/v1/reps/{rep_id}/tokens" if rep_id else "/v1/access/tokens"
        response = await self.client.post(path, json={"name": name, "role": role}, headers=ADMIN)
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    def link(self, lead_id: str, action: str, rep_id: str, expires: datetime | None = None) -> str:
        keys = links.link_keys(None)
        token = links.sign(keys, lead_id, action, rep_id, expires or datetime.now(UTC) + timedelta(hours=1))
        return f"/v1/links/{token}"


@asynccontextmanager
async def serving(
    database_url: str, kafka_bootstrap: str, namespace: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[App]:
    """Routing in-process on the test roster, with its lifespan (consumer, timers, webhook sender) running."""
    settings = service_settings(
        database_url,
        tmp_path,
        kafka_bootstrap=kafka_bootstrap,
        namespace=namespace,
        **overrides,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://routing.test") as client:
            yield App(app, client)


@pytest.fixture
async def routing(database_url: str, kafka_bootstrap: str, namespace: str, tmp_path: Path) -> AsyncIterator[App]:
    async with serving(database_url, kafka_bootstrap, namespace, tmp_path, ops_token=OPS_TOKEN) as app:
        yield app


def _other(rep_id: str) -> str:
    return "r2" if rep_id == "r1" else "r1"


# -- rep tokens -----------------------------------------------------------------------------------------------------


async def test_a_rep_token_cannot_act_on_another_reps_lead_and_acts_on_its_own(routing: App) -> None:
    lead = await routing.route()
    owner = lead["current_assignment"]["rep_id"]
    mine, theirs = await routing.token(owner), await routing.token(_other(owner))
    path = f"/v1/leads/{lead['lead_id']}/actions"

    refused = await routing.client.post(path, json={"action": "touch"}, headers=theirs)
    assert refused.status_code == 403, refused.text
    assert "another rep" in str(refused.json()["detail"])
    # Naming the owner in the body changes nothing: the rep comes from the credential.
    forged = await routing.client.post(path, json={"action": "touch", "rep_id": owner}, headers=theirs)
    assert forged.status_code == 403 and "own rep" in str(forged.json()["detail"])
    after = await routing.lead(lead["lead_id"])
    assert after["status"] == "assigned" and after["first_touch_at"] is None
    assert after["timeline"] == lead["timeline"]

    touched = await routing.client.post(path, json={"action": "touch"}, headers=mine)
    assert touched.status_code == 200, touched.text
    assert (await routing.lead(lead["lead_id"]))["status"] == "touched"


async def test_a_rep_token_reads_the_leads_its_rep_holds_and_no_other(routing: App) -> None:
    lead = await routing.route()
    owner = lead["current_assignment"]["rep_id"]
    path = f"/v1/leads/{lead['lead_id']}"

    mine = await routing.client.get(path, headers=await routing.token(owner))
    assert mine.status_code == 200, mine.text
    assert mine.json()["current_assignment"]["rep_id"] == owner
    theirs = await routing.client.get(path, headers=await routing.token(_other(owner)))
    assert theirs.status_code == 403, theirs.text
    assert "holds" in str(theirs.json()["detail"]) and "timeline" not in theirs.text


async def test_rep_tokens_are_listed_without_secrets_and_stop_working_when_revoked(routing: App) -> None:
    issued = await routing.client.post("/v1/reps/r1/tokens", json={"name": "phone"}, headers=ADMIN)
    assert issued.status_code == 201
    secret, token_id = issued.json()["token"], issued.json()["id"]
    rep = {"Authorization": f"Bearer {secret}"}
    listed = await routing.client.get("/v1/reps/r1/tokens", headers=rep)
    assert listed.status_code == 200 and secret not in listed.text
    assert [t["name"] for t in listed.json()["items"]] == ["phone"]
    assert (await routing.client.get("/v1/reps/r2/tokens", headers=rep)).status_code == 403
    unknown = await routing.client.post("/v1/reps/nobody/tokens", json={"name": "x"}, headers=ADMIN)
    assert unknown.status_code == 404

    assert (await routing.client.delete(f"/v1/reps/r1/tokens/{token_id}", headers=ADMIN)).status_code == 204
    assert (await routing.client.patch("/v1/reps/r1", json={"status": "away"}, headers=rep)).status_code == 401


# -- roles ----------------------------------------------------------------------------------------------------------


async def test_roles_on_rules_and_roster(routing: App) -> None:
    reader, writer = await routing.token(role="ops-read"), await routing.token(role="ops-write", name="sam")
    rep = await routing.token("r1")
    rep_body = {"name": "Rep Nine", "email": "r9@example.com", "team": "t"}

    for who in (reader, OPS, writer):
        assert (await routing.client.get("/v1/reps", headers=who)).status_code == 200
        assert (await routing.client.get("/v1/routing/rules", headers=who)).status_code == 200
    assert (await routing.client.get("/v1/reps", headers=rep)).status_code == 403
    for who in (reader, OPS, rep):
        refused = await routing.client.put("/v1/reps/r9", json=rep_body, headers=who)
        assert refused.status_code == 403 and "ops-write" in refused.json()["detail"], refused.text
        assert (await routing.client.put("/v1/routing/rules", content=RULES, headers=who)).status_code == 403
    assert (await routing.client.put("/v1/reps/r9", json=rep_body, headers=writer)).status_code == 200
    assert (await routing.client.put("/v1/routing/rules", content=RULES, headers=writer)).status_code == 200
    staff = await routing.client.post("/v1/access/tokens", json={"name": "x", "role": "ops-write"}, headers=writer)
    assert staff.status_code == 403  # staff tokens come from the admin only
    bad_role = await routing.client.post("/v1/access/tokens", json={"name": "x", "role": "rep"}, headers=ADMIN)
    assert bad_role.status_code == 422 and bad_role.json()["detail"][0]["field"] == "role"

    # A rep sets their own availability, nothing else and nobody else's.
    assert (await routing.client.patch("/v1/reps/r1", json={"status": "away"}, headers=rep)).status_code == 200
    assert (await routing.client.patch("/v1/reps/r2", json={"status": "away"}, headers=rep)).status_code == 403
    capacity = await routing.client.patch("/v1/reps/r1", json={"max_open": 99}, headers=rep)
    assert capacity.status_code == 403 and capacity.json()["detail"][0]["field"] == "max_open"


async def test_the_audit_lists_changes_with_who_newest_first_in_pages(routing: App) -> None:
    writer = await routing.token(role="ops-write", name="sam")
    rep = await routing.token("r1")
    await routing.client.put("/v1/routing/rules", content=RULES, headers=writer)
    await routing.client.patch("/v1/reps/r1", json={"status": "away"}, headers=rep)
    await routing.client.put("/v1/reps/r9", json={"name": "N", "email": "n@example.com"}, headers=rep)  # refused
    await routing.client.put("/v1/teams/t2", json={"name": "Two"}, headers=ADMIN)

    assert (await routing.client.get("/v1/audit", headers=rep)).status_code == 403
    page = await routing.client.get("/v1/audit", params={"limit": 3}, headers=OPS)
    assert page.status_code == 200
    items = page.json()["items"]
    assert [(i["who"], i["action"], i["subject"]) for i in items] == [
        ("admin", "PUT /v1/teams/{team_id}", "t2"),
        ("rep:r1", "PATCH /v1/reps/{rep_id}", "r1"),
        ("token:sam", "PUT /v1/routing/rules", None),
    ]
    assert all(i["at"] for i in items)
    older = await routing.client.get("/v1/audit", params={"before": page.json()["next_before"]}, headers=OPS)
    assert [(i["who"], i["action"], i["subject"]) for i in older.json()["items"]] == [
        ("admin", "token.issue", "r1"),
        ("admin", "token.issue", "sam"),
    ]
    assert older.json()["next_before"] is None


# -- signed action links --------------------------------------------------------------------------------------------


async def test_a_link_acts_once_and_a_get_never_acts(routing: App) -> None:
    lead = await routing.route()
    owner = lead["current_assignment"]["rep_id"]
    path = routing.link(lead["lead_id"], "accept", owner)

    for _ in range(2):  # a mail scanner's prefetch, then the rep opening it
        page = await routing.client.get(path)
        assert page.status_code == 200 and "<form method='post'>" in page.text
    assert (await routing.lead(lead["lead_id"]))["status"] == "assigned"

    done = await routing.client.post(path)
    assert done.status_code == 200, done.text
    assert (await routing.lead(lead["lead_id"]))["status"] == "accepted"
    again = await routing.client.post(path)
    assert again.status_code == 409 and "already used" in again.json()["detail"]
    assert (await routing.client.get(path)).status_code == 409


async def test_tampered_expired_and_foreign_links_are_refused(routing: App) -> None:
    lead = await routing.route()
    owner = lead["current_assignment"]["rep_id"]
    path = routing.link(lead["lead_id"], "touch", owner)
    body, _, mac = path.removeprefix("/v1/links/").partition(".")
    forged = routing.link(lead["lead_id"], "touch", _other(owner)).removeprefix("/v1/links/").partition(".")[0]
    for tampered in (f"{forged}.{mac}", f"{body}.{mac[:-2]}", f"{body}x.{mac}", "garbage"):
        for method in ("GET", "POST"):
            refused = await routing.client.request(method, f"/v1/links/{tampered}")
            assert refused.status_code == 403 and "not valid" in refused.json()["detail"], (tampered, refused.text)
    expired = routing.link(lead["lead_id"], "touch", owner, datetime.now(UTC) - timedelta(seconds=1))
    refused = await routing.client.post(expired)
    assert refused.status_code == 410 and "expired" in refused.json()["detail"]

    not_theirs = await routing.client.post(routing.link(lead["lead_id"], "touch", _other(owner)))
    assert not_theirs.status_code == 403 and "another rep" in not_theirs.json()["detail"]
    assert (await routing.lead(lead["lead_id"]))["status"] == "assigned"

    reject = routing.link(lead["lead_id"], "reject", owner)
    no_reason = await routing.client.post(reject)
    assert no_reason.status_code == 422 and no_reason.json()["detail"][0]["field"] == "reason"
    rejected = await routing.client.post(reject, data={"reason": "wrong_fit"})
    assert rejected.status_code == 200, rejected.text
    assert (await routing.lead(lead["lead_id"]))["current_assignment"]["rep_id"] != owner


async def test_an_away_link_sets_the_rep_away_until_the_time_given(routing: App) -> None:
    lead = await routing.route()
    owner = lead["current_assignment"]["rep_id"]
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0, tzinfo=None)
    done = await routing.client.post(routing.link(lead["lead_id"], "away", owner), data={"until": until.isoformat()})
    assert done.status_code == 200, done.text
    rep = (await routing.client.get(f"/v1/reps/{owner}", headers=ADMIN)).json()
    assert datetime.fromisoformat(rep["ooo_until"]) == until.replace(tzinfo=UTC)


# -- links in chat messages -----------------------------------------------------------------------------------------


def test_slack_and_teams_messages_carry_the_assigned_reps_signed_action_links() -> None:
    keys, now = links.link_keys(None), datetime.now(UTC)
    body = webhook_body("lead.assigned", now, {"lead_id": "L1", "rep": {"id": "ana", "name": "Ana"}})

    def make(lead_id: str, rep_id: str) -> list[tuple[str, str]]:
        return links.action_links(keys, "https://handoff.example", lead_id, rep_id, now)

    slack = json.loads(render("slack", body, links_base_url="https://handoff.example", action_links=make))
    buttons = next(block for block in slack["blocks"] if block["type"] == "actions")["elements"]
    labels = [button["text"]["text"] for button in buttons]
    assert labels == ["Open lead", "Accept", "Mark touched", "Reject", "Set me away", "Ops dashboard"]
    teams = json.loads(render("teams", body, links_base_url="https://handoff.example", action_links=make))
    actions = teams["attachments"][0]["content"]["actions"]
    assert [a["title"] for a in actions] == labels
    for url in [button["url"] for button in buttons[1:5]] + [a["url"] for a in actions[1:5]]:
        assert url.startswith("https://handoff.example/v1/links/")
        link = links.verify(keys, url.rsplit("/", 1)[1], now)
        assert (link.lead_id, link.rep_id) == ("L1", "ana")
    # A message about a breach the rep can no longer act on, or without a rep, carries none.
    breached = webhook_body("lead.sla_breached", now, {"lead_id": "L1"})
    plain = json.loads(render("slack", breached, links_base_url="https://handoff.example", action_links=make))
    assert "/v1/links/" not in json.dumps(plain)


# -- email ----------------------------------------------------------------------------------------------------------


async def test_the_assigned_rep_gets_an_email_with_links_that_act_once(
    database_url: str, kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    with smtp_server() as mailbox:
        mailbox.refuse_next = 1  # the first try is refused (451): the delivery machinery retries it
        smtp = {"smtp_host": mailbox.host, "smtp_port": mailbox.port, "smtp_from": "handoff@example.com"}
        links_url = {"webhook_links_base_url": "https://handoff.example", "webhook_retry_schedule_s": [0.1] * 3}
        async with serving(database_url, kafka_bootstrap, namespace, tmp_path, **smtp, **links_url) as routing:
            lead = await routing.route()
            owner = lead["current_assignment"]["rep_id"]
            [message] = await wait_until_async(mailbox.received, timeout=30, what="the assignment email")

    assert message["To"] == f"{owner}@example.com" and message["From"] == "handoff@example.com"
    assert message["Subject"].startswith("New lead: Pat Lee")
    text = message.get_content()
    assert f"https://handoff.example/v1/leads/{lead['lead_id']}" in text
    urls = dict(line.split(": ", 1) for line in text.splitlines() if "/v1/links/" in line)
    assert set(urls) == {"Accept", "Mark touched", "Reject", "Set me away"}
    link = links.verify(links.link_keys(None), urls["Accept"].rsplit("/", 1)[1], datetime.now(UTC))
    assert (link.lead_id, link.rep_id, link.action) == (lead["lead_id"], owner, "accept")
    assert lead["lead_id"] not in str(mailbox.envelopes) and len(mailbox.envelopes) == 1


async def test_a_queued_lead_is_emailed_to_its_team_and_the_first_claim_link_wins_once(
    database_url: str, kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    with smtp_server() as mailbox:
        smtp = {"smtp_host": mailbox.host, "smtp_port": mailbox.port, "webhook_links_base_url": "https://h.example"}
        async with serving(database_url, kafka_bootstrap, namespace, tmp_path, **smtp) as routing:
            for rep_id in ("r1", "r2", "r3"):  # everyone full: the lead waits in the team's queue
                assert (
                    await routing.client.patch(f"/v1/reps/{rep_id}", json={"max_open": 0}, headers=ADMIN)
                ).is_success
            lead = await routing.route()
            assert lead["status"] == "queued"
            mails = await wait_until_async(
                lambda: len(mailbox.received()) == 3 and mailbox.received(), timeout=30, what="three claim emails"
            )
            claims = {m["To"].split("@")[0]: _links_in(m.get_content())["Claim"] for m in mails}
            assert set(claims) == {"r1", "r2", "r3"}
            assert all(m["Subject"].startswith("Lead to claim:") for m in mails)

            def path(url: str) -> str:
                return url.removeprefix("https://h.example")

            won = await routing.client.post(path(claims["r2"]))
            assert won.status_code == 200, won.text
            again = await routing.client.post(path(claims["r2"]))
            assert again.status_code == 409 and "already used" in again.json()["detail"]
            late = await routing.client.post(path(claims["r3"]))
            assert late.status_code == 409 and "already claimed by r2" in late.json()["detail"]
            after = await routing.lead(lead["lead_id"])
            assert after["current_assignment"]["rep_id"] == "r2"


def _links_in(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines() if "/v1/" in line)


async def test_a_rep_who_left_holds_no_credential(routing: App) -> None:
    lead = await routing.route()
    owner = lead["current_assignment"]["rep_id"]
    token = await routing.token(owner)
    link = routing.link(lead["lead_id"], "touch", owner)
    assert (await routing.client.patch(f"/v1/reps/{owner}", json={"status": "left"}, headers=ADMIN)).is_success

    path = f"/v1/leads/{lead['lead_id']}/actions"
    assert (await routing.client.post(path, json={"action": "touch"}, headers=token)).status_code == 401
    refused = await routing.client.post(link)
    assert refused.status_code == 403 and "no longer on the roster" in refused.json()["detail"]


async def test_named_staff_tokens_read_the_ops_views_and_a_rep_token_does_not(routing: App) -> None:
    reader, rep = await routing.token(role="ops-read", name="wall"), await routing.token("r1")
    for path in ("/v1/sla/summary", "/v1/sla/breaches", "/v1/ops/board"):
        assert (await routing.client.get(path, headers=reader)).status_code == 200, path
        assert (await routing.client.get(path, headers=rep)).status_code == 403, path
        assert (await routing.client.get(path)).status_code == 401, path


async def test_spent_links_are_forgotten_once_they_have_expired(routing: App) -> None:
    lead = await routing.route()
    owner = lead["current_assignment"]["rep_id"]
    assert (await routing.client.post(routing.link(lead["lead_id"], "accept", owner))).status_code == 200
    db = routing.app.state.runtime.db
    async with db.transaction() as session:
        assert await acting.purge_spent_links(session, datetime.now(UTC), 100) == 0  # still in force: kept
    async with db.transaction() as session:
        assert await acting.purge_spent_links(session, datetime.now(UTC) + timedelta(hours=2), 100) == 1
