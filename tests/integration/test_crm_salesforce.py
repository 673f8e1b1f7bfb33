"""Salesforce both ways against the loopback org (tests/support/salesforce_server.py), on a real routing store.

Outbound: an assignment's delivery upserts a Lead with the rep's User as OwnerId, a reassignment moves the owner
on the same record, limits and expired sessions are survived. Inbound: the poller turns Tasks, Events and Lead
Status changes into touches, timeline entries and conversions, once each, and its cursor moves only past what
has committed.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from routing.app import create_app
from routing.connectors.salesforce import SYSTEM
from routing.connectors.salesforce_api import Credentials, SalesforceClient, SalesforceError
from routing.connectors.salesforce_poll import SalesforcePoller
from routing.connectors.salesforce_setup import (
    SalesforceSettingsIn,
    SetupError,
    match_users,
    rep_emails,
    save_imported,
    save_settings,
    set_owners,
)
from routing.store.crm import CrmRepository
from routing.store.salesforce import SalesforceRepository
from routing.webhooks.sender import WebhookSender
from tests.support.routing import Clock, Routing, routing_on, scored, service_settings
from tests.support.salesforce_server import SalesforceServer
from tests.support.stack import ADMIN

pytestmark = pytest.mark.integration
OPS_TOKEN = "ops-read-token-0123456789"


@pytest.fixture
def org() -> Iterator[SalesforceServer]:
    server = SalesforceServer().start()
    yield server
    server.stop()


@pytest.fixture
async def routing(database_url: str) -> AsyncIterator[Routing]:
    clock = Clock(datetime.now(UTC))
    overrides: dict[str, Any] = {
        "webhook_allow_loopback": True,
        "webhook_timeout_s": 5.0,
        "salesforce_poll_overlap_s": 5.0,
    }
    async with routing_on(database_url, clock, **overrides) as r:
        yield r


def _values(org: SalesforceServer, **overrides: Any) -> SalesforceSettingsIn:
    values: dict[str, Any] = {
        "login_url": org.url,
        "client_id": org.client_id,
        "client_secret": org.client_secret,
        "api_version": org.api_version.lstrip("v"),
        "upsert_key": "email",
        "context_fields": {"grade": "Handoff_Grade__c", "sla_due": "Handoff_SLA_Due__c"},
        "statuses": {"Closed - Converted": "convert", "Closed - Not Converted": "disqualify"},
        "lead_source": "Handoff",
        "enabled": True,
    }
    values.update(overrides)
    return SalesforceSettingsIn(**values)


async def _connect(routing: Routing, org: SalesforceServer, **overrides: Any) -> dict[str, str]:
    """Salesforce set up, and each rep mapped to a User of the org; returns rep id -> User Id."""
    users = {rep: org.add_user(f"{rep}@example.com", rep.upper()) for rep in ("r1", "r2", "r3")}
    async with routing.db.transaction() as session:
        await save_settings(session, routing.router.settings, _values(org, **overrides), routing.clock())
        await set_owners(routing.router, session, users)
    return users


async def _send(routing: Routing) -> int:
    sender = WebhookSender(
        routing.db, routing.router.settings, clock=routing.clock, wall_clock=routing.clock, rand=random.Random(3).random
    )
    try:
        return await sender.run_once()
    finally:
        await sender.close()


async def _lead_state(routing: Routing, lead_id: str) -> tuple[str, str | None] | None:
    async with routing.db.read() as session:
        return await CrmRepository(session).lead_state(lead_id)


async def _attempts(routing: Routing) -> list[tuple[str, int | None, str | None]]:
    from sqlalchemy import select

    from routing.store import WebhookAttempt

    async with routing.db.read() as session:
        rows = await session.execute(
            select(WebhookAttempt.result, WebhookAttempt.status_code, WebhookAttempt.error).order_by(
                WebhookAttempt.started_at
            )
        )
        return [(r[0], r[1], r[2]) for r in rows]


# -- the client -------------------------------------------------------------------------------------------------


async def test_client_credentials_token_is_renewed_once_when_the_session_expires(org: SalesforceServer) -> None:
    async with httpx.AsyncClient() as http:
        client = SalesforceClient(http, Credentials(org.url, org.client_id, org.client_secret, "60.0"))
        user = org.add_user("a@example.com")
        assert [u["Id"] for u in await client.query("SELECT Id FROM User")] == [user]
        org.expire_sessions()
        assert [u["Id"] for u in await client.query("SELECT Id FROM User")] == [user]
    assert org.tokens_issued == 2
    token_calls = org.calls("POST", "/services/oauth2/token")
    assert all(call[2]["authorization"].startswith("Basic ") for call in token_calls)
    assert b"grant_type=client_credentials" in token_calls[0][3]


async def test_wrong_client_secret_is_an_error_naming_the_oauth_code(org: SalesforceServer) -> None:
    async with httpx.AsyncClient() as http:
        client = SalesforceClient(http, Credentials(org.url, org.client_id, "wrong", "60.0"))
        with pytest.raises(SalesforceError) as caught:
            await client.query("SELECT Id FROM User")
    assert caught.value.status == 400 and caught.value.code == "invalid_client"
    assert not caught.value.transient


async def test_queries_follow_next_records_url_until_done(org: SalesforceServer) -> None:
    org.page_size = 2
    made = [org.add_user(f"u{i}@example.com") for i in range(5)]
    async with httpx.AsyncClient() as http:
        client = SalesforceClient(http, Credentials(org.url, org.client_id, org.client_secret, "60.0"))
        pages = [page async for page in client.query_pages("SELECT Id, Email FROM User ORDER BY Email")]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [r["Id"] for page in pages for r in page] == made
    assert len(org.calls("GET", "/query/01g")) == 2


async def test_limits_are_rate_limited_errors_with_retry_after(org: SalesforceServer) -> None:
    async with httpx.AsyncClient() as http:
        client = SalesforceClient(http, Credentials(org.url, org.client_id, org.client_secret, "60.0"))
        org.limit_exceeded()
        with pytest.raises(SalesforceError) as daily:
            await client.query("SELECT Id FROM User")
        org.fail_next(429, [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}], {"Retry-After": "7"})
        with pytest.raises(SalesforceError) as burst:
            await client.query("SELECT Id FROM User")
    assert daily.value.status == 403 and daily.value.rate_limited and daily.value.retry_after_s is None
    assert burst.value.status == 429 and burst.value.rate_limited and burst.value.retry_after_s == 7


# -- outbound -----------------------------------------------------------------------------------------------------


async def test_an_assignment_upserts_the_lead_with_the_reps_user_as_owner_and_a_reassignment_moves_it(
    routing: Routing, org: SalesforceServer
) -> None:
    users = await _connect(routing, org)
    event = scored(email="pat.lee@example.org", company="Acme GmbH", job_title="CTO")
    lead_id = event.data["lead_id"]
    await routing.route(event)
    assert await _send(routing) == 1
    state = await _lead_state(routing, lead_id)
    assert state is not None and state[1] is not None
    lead = org.lead_by("Email", "pat.lee@example.org")
    assert lead is not None
    assert lead["OwnerId"] == users[state[1]]
    assert (lead["LastName"], lead["Company"], lead["Title"]) == ("Lee", "Acme GmbH", "CTO")
    assert lead["LeadSource"] == "Handoff"
    assert lead["Handoff_Grade__c"] == "A" and lead["Handoff_SLA_Due__c"]
    async with routing.db.read() as session:
        link = await CrmRepository(session).link_of_lead(SYSTEM, lead_id)
    assert link is not None and link.external_id == lead["Id"]

    first_rep = state[1]
    await routing.act(lead_id, "reject", rep_id=first_rep, reason="not my territory")
    assert await _send(routing) >= 1
    state = await _lead_state(routing, lead_id)
    assert state is not None and state[1] not in (None, first_rep)
    moved = org.lead_by("Email", "pat.lee@example.org")
    assert moved is not None and moved["Id"] == lead["Id"] and moved["OwnerId"] == users[state[1]]
    assert len(org.records["Lead"]) == 1
    assert all(result == "success" for result, _, _ in await _attempts(routing))


async def test_upsert_by_an_external_id_field_is_idempotent_on_the_lead_id(
    routing: Routing, org: SalesforceServer
) -> None:
    await _connect(routing, org, upsert_key="Handoff_Lead_Id__c")
    event = scored(email="sam@example.org")
    await routing.route(event)
    await _send(routing)
    lead = org.lead_by("Handoff_Lead_Id__c", event.data["lead_id"])
    assert lead is not None and lead["Email"] == "sam@example.org"
    patch = org.calls("PATCH", f"/sobjects/Lead/Handoff_Lead_Id__c/{event.data['lead_id']}")
    assert len(patch) == 1


async def test_a_limit_or_an_expired_session_is_retried_and_the_lead_written_once(
    routing: Routing, org: SalesforceServer
) -> None:
    users = await _connect(routing, org)
    event = scored(email="kim@example.org")
    await routing.route(event)
    org.limit_exceeded(only="/sobjects/Lead")
    assert await _send(routing) == 1
    (result, status, error), *_ = await _attempts(routing)
    assert (result, status) == ("http_error", 403) and error is not None and "REQUEST_LIMIT_EXCEEDED" in error
    assert "kim@example.org" not in error
    assert org.lead_by("Email", "kim@example.org") is None

    org.expire_sessions()
    routing.clock.advance(seconds=routing.router.settings.salesforce_limit_pause_s + 60)
    assert await _send(routing) == 1
    lead = org.lead_by("Email", "kim@example.org")
    assert lead is not None and lead["OwnerId"] in users.values()
    assert [r for r, _, _ in await _attempts(routing)] == ["http_error", "success"]


async def test_a_rep_without_a_mapped_user_fails_visibly(routing: Routing, org: SalesforceServer) -> None:
    await _connect(routing, org)
    async with routing.db.transaction() as session:
        await set_owners(routing.router, session, {"r1": None, "r2": None, "r3": None})
    await routing.route(scored(email="lou@example.org"))
    await _send(routing)
    (result, _, error), *_ = await _attempts(routing)
    assert result == "error" and error is not None and "no Salesforce user mapped" in error
    assert not org.records["Lead"]


async def test_settings_need_a_secret_first_and_keep_it_sealed(routing: Routing, org: SalesforceServer) -> None:
    async with routing.db.transaction() as session:
        with pytest.raises(SetupError) as caught:
            await save_settings(session, routing.router.settings, _values(org, client_secret=None), routing.clock())
    assert caught.value.field == "client_secret"
    await _connect(routing, org)
    async with routing.db.transaction() as session:
        shown = await save_settings(session, routing.router.settings, _values(org, client_secret=None), routing.clock())
        row = await SalesforceRepository(session).settings(SYSTEM)
    assert shown["client_secret_set"] and "client_secret" not in shown
    assert row is not None and org.client_secret not in str(row.config)


async def test_owners_import_matches_reps_by_user_email(routing: Routing, org: SalesforceServer) -> None:
    await _connect(routing, org)
    async with routing.db.transaction() as session:
        await set_owners(routing.router, session, {"r1": None, "r2": None, "r3": None})
    org.add_user("m@example.com", active=False)
    async with routing.db.read() as session:
        emails = await rep_emails(routing.router, session)
    async with httpx.AsyncClient() as http:
        client = SalesforceClient(http, Credentials(org.url, org.client_id, org.client_secret, "60.0"))
        matched = await match_users(client, emails)
    assert sorted(matched) == ["r1", "r2", "r3"]  # the manager's User is inactive
    async with routing.db.transaction() as session:
        owners = await save_imported(session, matched)
    assert owners == matched


# -- inbound ------------------------------------------------------------------------------------------------------


async def _routed_and_written(routing: Routing, org: SalesforceServer, email: str) -> tuple[str, str, str]:
    """A lead routed and written to the org: (lead id, its Salesforce Id, its rep)."""
    event = scored(email=email)
    await routing.route(event)
    await _send(routing)
    lead = org.lead_by("Email", email)
    state = await _lead_state(routing, event.data["lead_id"])
    assert lead is not None and state is not None and state[1] is not None
    return event.data["lead_id"], lead["Id"], state[1]


async def test_a_task_by_the_owner_touches_the_lead_and_anyone_elses_is_only_recorded(
    routing: Routing, org: SalesforceServer
) -> None:
    users = await _connect(routing, org)
    first, first_sf, first_rep = await _routed_and_written(routing, org, "one@example.org")
    second, second_sf, second_rep = await _routed_and_written(routing, org, "two@example.org")
    someone_else = next(u for rep, u in users.items() if rep != second_rep)
    org.log_task(first_sf, users[first_rep], "Call")
    org.log_event(second_sf, someone_else, "Meeting")
    org.log_task(org.new_id("Lead"), users[first_rep], "A lead Handoff never wrote")

    poller = SalesforcePoller(routing.db, routing.router, routing.router.settings)
    await poller.poll_once()
    await poller.poll_once()  # the overlap reads them again: nothing acts twice
    state_first, state_second = await _lead_state(routing, first), await _lead_state(routing, second)
    assert state_first is not None and state_first[0] == "touched"
    assert state_second is not None and state_second[0] == "assigned"
    assert poller.signals.get("touched") == 1 and poller.signals.get("recorded") == 1
    assert poller.signals.get("duplicate") == 2


async def test_an_open_task_is_a_to_do_and_touches_only_once_completed(routing: Routing, org: SalesforceServer) -> None:
    users = await _connect(routing, org)
    lead_id, sf_id, rep = await _routed_and_written(routing, org, "todo@example.org")
    task = org.log_task(sf_id, users[rep], "Call back on Monday", done=False)
    poller = SalesforcePoller(routing.db, routing.router, routing.router.settings)
    await poller.poll_once()
    state = await _lead_state(routing, lead_id)
    assert state is not None and state[0] == "assigned"
    org.complete_task(task)
    await poller.poll_once()
    state = await _lead_state(routing, lead_id)
    assert state is not None and state[0] == "touched"


async def test_a_status_change_to_a_mapped_status_converts_once(routing: Routing, org: SalesforceServer) -> None:
    users = await _connect(routing, org)
    lead_id, sf_id, rep = await _routed_and_written(routing, org, "won@example.org")
    org.set_lead_status(sf_id, "Working - Contacted", users[rep])
    poller = SalesforcePoller(routing.db, routing.router, routing.router.settings)
    await poller.poll_once()
    state = await _lead_state(routing, lead_id)
    assert state is not None and state[0] == "assigned"
    org.set_lead_status(sf_id, "Closed - Converted", users[rep])
    await poller.poll_once()
    await poller.poll_once()
    state = await _lead_state(routing, lead_id)
    assert state is not None and state[0] == "converted"
    assert poller.signals == {"converted": 1, "duplicate": 1}


async def test_equal_timestamps_across_pages_and_a_failed_page_lose_nothing(
    routing: Routing, org: SalesforceServer
) -> None:
    users = await _connect(routing, org)
    written = [await _routed_and_written(routing, org, f"p{i}@example.org") for i in range(5)]
    org.page_size = 2
    same = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    for _lead_id, sf_id, rep in written:
        org.log_task(sf_id, users[rep], "Call", at=same)  # five Tasks stamped the same second
    org.limit_exceeded(only="/query/01g")  # the second page is refused: the first page's touches commit alone
    poller = SalesforcePoller(routing.db, routing.router, routing.router.settings)
    assert await poller.poll_once() == routing.router.settings.salesforce_limit_pause_s
    touched = [s for s in [await _lead_state(routing, w[0]) for w in written] if s and s[0] == "touched"]
    assert len(touched) == 2
    async with routing.db.read() as session:
        _enabled, _config, cursor = await SalesforceRepository(session).cursor(SYSTEM)
    assert cursor["Task"].startswith(same.strftime("%Y-%m-%dT%H:%M:%S"))
    await poller.poll_once()
    states = [await _lead_state(routing, w[0]) for w in written]
    assert all(s is not None and s[0] == "touched" for s in states)
    assert poller.signals.get("touched") == 5


async def test_a_disabled_connector_neither_polls_nor_writes(routing: Routing, org: SalesforceServer) -> None:
    await _connect(routing, org, enabled=False)
    await routing.route(scored(email="off@example.org"))
    assert await _send(routing) == 0
    poller = SalesforcePoller(routing.db, routing.router, routing.router.settings)
    assert await poller.poll_once() is False
    assert not org.calls()


async def test_an_email_with_a_quote_is_looked_up_escaped_not_injected(routing: Routing, org: SalesforceServer) -> None:
    users = await _connect(routing, org)
    org.records["Lead"]["00Q000000000999"] = {
        "Id": "00Q000000000999", "Email": "o'brien@example.org", "LastName": "O'Brien", "Company": "Old",
        "OwnerId": users["r1"], "Status": "Open - Not Contacted", "IsConverted": False,
        "SystemModstamp": "2026-01-01T00:00:00.000+0000",
    }  # fmt: skip
    await routing.route(scored(email="o'brien@example.org", company="New Co", last_name="O'Brien"))
    await _send(routing)
    assert list(org.records["Lead"]) == ["00Q000000000999"]  # found by its email and updated, not duplicated
    assert org.records["Lead"]["00Q000000000999"]["Company"] == "New Co"
    query = next(c[1] for c in org.calls("GET", "/query"))
    assert "o%5C%27brien" in query  # the quote went out escaped: o\'brien


# -- the settings API ---------------------------------------------------------------------------------------------


@pytest.fixture
async def api(
    database_url: str, kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = service_settings(
        database_url,
        tmp_path,
        kafka_bootstrap=kafka_bootstrap,
        namespace=namespace,
        rules=None,
        ops_token=OPS_TOKEN,
        webhook_allow_loopback=True,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://routing.test") as client:
            yield client


@pytest.mark.kafka
async def test_the_settings_api_answers_clear_4xx_and_never_shows_the_secret(
    api: httpx.AsyncClient, org: SalesforceServer
) -> None:
    body = {"login_url": org.url, "client_id": org.client_id, "client_secret": org.client_secret}
    url = "/v1/crm/salesforce"
    assert (await api.put(url, json=body)).status_code == 401
    ops = {"Authorization": f"Bearer {OPS_TOKEN}"}
    assert (await api.put(url, json=body, headers=ops)).status_code == 403
    assert (await api.get(url, headers=ops)).json() == {"configured": False}

    def field_of(response: httpx.Response) -> str:
        assert response.status_code == 422, response.text
        return str(response.json()["detail"][0]["field"])

    assert field_of(await api.put(url, json={**body, "client_secret": None}, headers=ADMIN)) == "client_secret"
    assert "login_url" in field_of(await api.put(url, json={**body, "login_url": "ftp://x.example"}, headers=ADMIN))
    assert "upsert_key" in field_of(await api.put(url, json={**body, "upsert_key": "Email; DROP"}, headers=ADMIN))
    wrong_status = {**body, "statuses": {"Closed - Won": "celebrate"}}
    assert "statuses" in field_of(await api.put(url, json=wrong_status, headers=ADMIN))

    saved = await api.put(url, json={**body, "statuses": {"Closed - Converted": "convert"}}, headers=ADMIN)
    assert saved.status_code == 200, saved.text
    shown = (await api.get(url, headers=ops)).json()
    assert shown["configured"] and shown["client_secret_set"] and org.client_secret not in json.dumps(shown)
    assert shown["statuses"] == {"Closed - Converted": "convert"} and shown["endpoint_id"]

    owners = f"{url}/owners"
    assert field_of(await api.put(f"{owners}/nobody", json={"owner_id": "005000000000001"}, headers=ADMIN)) == (
        "owners.nobody"
    )
    assert field_of(await api.put(f"{owners}/r1", json={"owner_id": "001000000000001"}, headers=ADMIN)) == "owners.r1"
    mapped = await api.put(f"{owners}/r1", json={"owner_id": "005000000000001"}, headers=ADMIN)
    assert mapped.status_code == 200 and mapped.json()["owners"] == {"r1": "005000000000001"}


async def test_an_older_delivery_retried_after_a_reassignment_does_not_hand_the_lead_back(
    routing: Routing, org: SalesforceServer
) -> None:
    users = await _connect(routing, org)
    event = scored(email="late@example.org")
    lead_id = event.data["lead_id"]
    await routing.route(event)
    org.limit_exceeded(only="/query")  # the first delivery's look-up is refused: it waits for the limit pause
    assert await _send(routing) == 1
    first = await _lead_state(routing, lead_id)
    assert first is not None and first[1] is not None
    await routing.act(lead_id, "reject", rep_id=first[1], reason="not my territory")
    assert await _send(routing) == 1  # the reassignment goes first
    now = await _lead_state(routing, lead_id)
    assert now is not None and now[1] not in (None, first[1])
    routing.clock.advance(seconds=routing.router.settings.salesforce_limit_pause_s + 60)
    assert await _send(routing) == 1  # the older delivery, retried
    lead = org.lead_by("Email", "late@example.org")
    assert lead is not None and lead["OwnerId"] == users[now[1]]
    assert len(org.records["Lead"]) == 1


# -- the JWT bearer flow ------------------------------------------------------------------------------------------


def _rsa_pem(bits: int = 2048) -> tuple[str, str]:
    """A fresh RSA key: (private PEM, public PEM), as an admin makes one for the connected app's certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


async def test_jwt_bearer_assertions_are_signed_with_the_apps_key_and_a_wrong_key_is_refused(
    org: SalesforceServer,
) -> None:
    private, public = _rsa_pem()
    other, _ = _rsa_pem()
    org.jwt_public_key = public
    user = "integration@handoff.example"
    async with httpx.AsyncClient() as http:
        good = SalesforceClient(
            http, Credentials(org.url, org.client_id, "", "60.0", username=user, private_key=private)
        )
        assert await good.query("SELECT Id FROM User") == []
        bad = SalesforceClient(http, Credentials(org.url, org.client_id, "", "60.0", username=user, private_key=other))
        with pytest.raises(SalesforceError) as caught:
            await bad.query("SELECT Id FROM User")
    assert caught.value.code == "invalid_grant" and not caught.value.transient
    token_call = org.calls("POST", "/services/oauth2/token")[0]
    assert "authorization" not in token_call[2]
    assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in token_call[3]


async def test_a_jwt_bearer_connection_writes_leads_and_keeps_its_key_sealed(
    routing: Routing, org: SalesforceServer
) -> None:
    private, public = _rsa_pem()
    org.jwt_public_key = public
    jwt_settings = {"auth_flow": "jwt_bearer", "client_secret": None, "username": "integration@handoff.example"}
    async with routing.db.transaction() as session:
        settings = routing.router.settings
        with pytest.raises(SetupError) as no_key:
            await save_settings(session, settings, _values(org, **jwt_settings), routing.clock())
        with pytest.raises(SetupError) as weak_key:
            await save_settings(
                session, settings, _values(org, **jwt_settings, private_key=_rsa_pem(1024)[0]), routing.clock()
            )
        with pytest.raises(SetupError) as no_user:
            await save_settings(session, settings, _values(org, **{**jwt_settings, "username": None}), routing.clock())
    assert (no_key.value.field, weak_key.value.field, no_user.value.field) == ("private_key", "private_key", "username")
    users = await _connect(routing, org, **jwt_settings, private_key=private)
    async with routing.db.read() as session:
        row = await SalesforceRepository(session).settings(SYSTEM)
    assert row is not None and "PRIVATE KEY" not in json.dumps(row.config)
    await routing.route(scored(email="jwt@example.org"))
    assert await _send(routing) == 1
    lead = org.lead_by("Email", "jwt@example.org")
    assert lead is not None and lead["OwnerId"] in users.values()
