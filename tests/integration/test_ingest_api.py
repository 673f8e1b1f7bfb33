"""Ingest's own HTTP API through the in-process app: sources, posting leads (back ends and browser forms), bad
input, store failures, repeats, erasure and reading. Store-touching tests run on SQLite and PostgreSQL.

Tests that only check what was (not) stored point the app at a broker address where nothing listens: the outbox
relay then never publishes, so the outbox rows a request wrote are still there to be counted. Tests that read
events back use the real broker and a topic namespace of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from common.crypto import SecretBox
from common.envelope import Event
from common.outbox import backlog
from common.settings import DEV_ADMIN_TOKEN
from common.topics import LEADS_ERASED, LEADS_RECEIVED
from ingest.app import create_app
from ingest.settings import IngestSettings
from ingest.store import Base, IdempotencyRecord, Lead, LeadIdentity, Source, outbox
from tests.support.stack import ADMIN, ADMIN_TOKEN, Service, free_port, read_topic, wait_until_async

pytestmark = [pytest.mark.integration]

NO_BROKER = "127.0.0.1:1"  # nothing listens: events stay in the outbox, where a test can count them
ORIGIN = "https://www.example.com"
THANK_YOU = "https://www.example.com/thanks"


class Clock:
    """The app's clock, moved by the test (repeat windows are hours long)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Ingest:
    app: FastAPI
    client: httpx.AsyncClient
    settings: IngestSettings
    clock: Clock
    bootstrap: str
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client_from(self, address: str) -> httpx.AsyncClient:
        """Another HTTP client, seen by the app as coming from `address`."""
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(address, 40000)), base_url="http://ingest"
        )
        self.clients.append(client)
        return client


@contextlib.asynccontextmanager
async def running_ingest(database_url: str, *, bootstrap: str = NO_BROKER, **overrides: Any) -> AsyncIterator[Ingest]:
    settings = IngestSettings(
        env="test",
        admin_token=ADMIN_TOKEN,
        kafka_bootstrap=bootstrap,
        topic_namespace=f"t{uuid.uuid4().hex[:10]}.",
        topic_partitions=1,
        outbox_poll_interval_s=0.05,
        log_format="console",
        log_level="WARNING",
        **{"INGEST_DATABASE_URL": database_url},
        **overrides,
    )
    clock = Clock()
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            ingest = Ingest(app, client, settings, clock, bootstrap)
            try:
                yield ingest
            finally:
                for other in ingest.clients:
                    await other.aclose()


@pytest.fixture
async def ingest(database_url: str) -> AsyncIterator[Ingest]:
    async with running_ingest(database_url) as running:
        yield running


@pytest.fixture
async def ingest_kafka(database_url: str, kafka_bootstrap: str) -> AsyncIterator[Ingest]:
    async with running_ingest(database_url, bootstrap=kafka_bootstrap) as running:
        yield running


# -- helpers ---------------------------------------------------------------------------------------------------


async def _source(ingest: Ingest, kind: str = "web", **fields: Any) -> dict[str, Any]:
    fields.setdefault("name", f"{kind} source")
    response = await ingest.client.post("/v1/sources", json={"kind": kind, **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


async def _web_source(ingest: Ingest, **fields: Any) -> dict[str, Any]:
    fields.setdefault("allowed_origins", [ORIGIN])
    fields.setdefault("thank_you_url", THANK_YOU)
    return await _source(ingest, "web", **fields)


def _key(source: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {source['api_key']}"}


def _email() -> str:
    return f"lead-{uuid.uuid4().hex[:10]}@example.org"


async def _post(ingest: Ingest, lead: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return await ingest.client.post("/v1/leads", json=lead, headers=headers or ADMIN)


async def _stored(ingest: Ingest) -> tuple[int, int]:
    """(lead rows, outbox rows) in ingest's store."""
    async with ingest.app.state.runtime.db.read() as session:
        leads = (await session.execute(select(func.count()).select_from(Lead))).scalar_one()
        events = (await session.execute(select(func.count()).select_from(outbox))).scalar_one()
    return int(leads), int(events)


async def _dump(ingest: Ingest) -> str:
    """Every value of every row of every ingest table, as text."""
    parts = []
    async with ingest.app.state.runtime.db.read() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                parts.extend(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row)
    return "\n".join(parts)


async def _events(ingest: Ingest, topic: str) -> list[Event]:
    """Every event on one of this app's topics, once the outbox has drained."""
    runtime = ingest.app.state.runtime

    async def drained() -> bool:
        return await backlog(runtime.db, runtime.outbox) == 0

    await wait_until_async(drained, timeout=30, what="the outbox to drain")
    records = await read_topic(ingest.bootstrap, ingest.settings.topic(topic), timeout=3)
    return [Event.from_record(r.key, r.value, r.headers) for r in records]


# -- sources -----------------------------------------------------------------------------------------------------


def test_outside_development_the_published_development_token_is_refused() -> None:
    for env in ("test", "production"):
        with pytest.raises(ValidationError, match="development token"):
            IngestSettings(env=env, admin_token=DEV_ADMIN_TOKEN)
    assert IngestSettings(env="development", admin_token=DEV_ADMIN_TOKEN).env == "development"
    assert IngestSettings(env="production", admin_token="p" * 32).env == "production"


async def test_a_web_source_shows_its_api_key_once_and_the_store_keeps_only_its_hash(ingest: Ingest) -> None:
    created = await _web_source(ingest, name="Website", default_region="DE")
    key = created["api_key"]
    assert key.startswith("hk_live_") and created["api_key_prefix"] == key[:12]
    assert created["publishable_key"].startswith("hk_pub_")

    shown = [
        (await ingest.client.get(f"/v1/sources/{created['id']}", headers=ADMIN)).text,
        (await ingest.client.get("/v1/sources", headers=ADMIN)).text,
        (await ingest.client.patch(f"/v1/sources/{created['id']}", json={"name": "Site"}, headers=ADMIN)).text,
    ]
    assert all(key not in answer and 'api_key"' not in answer for answer in shown)

    stored = await _dump(ingest)
    assert key not in stored and key[12:] not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in stored
    assert (await _post(ingest, {"email": _email()}, _key(created))).status_code == 202


async def test_platform_secrets_are_write_only_and_a_patch_merges_config(ingest: Ingest) -> None:
    secrets = {"app_secret": "meta-app-secret-0123", "verify_token": "verify-0123"}
    created = await _source(ingest, "meta", config=secrets)
    assert created["api_key"] is None and created["config_keys"] == ["app_secret", "verify_token"]
    assert created["webhook_url"] == f"http://ingest/v1/sources/{created['id']}/webhook"
    url = f"/v1/sources/{created['id']}"

    added = await ingest.client.patch(url, json={"config": {"access_token": "EAAG-token-0123"}}, headers=ADMIN)
    assert added.status_code == 200, added.text
    assert added.json()["config_keys"] == ["access_token", "app_secret", "verify_token"]
    removed = await ingest.client.patch(url, json={"config": {"verify_token": None}}, headers=ADMIN)
    assert removed.json()["config_keys"] == ["access_token", "app_secret"]

    answers = [added.text, removed.text, (await ingest.client.get("/v1/sources", headers=ADMIN)).text]
    for answer in answers:
        assert "meta-app-secret-0123" not in answer and "EAAG-token-0123" not in answer
    # The merge kept the secret nobody resent (encrypted at rest: see the next test).
    async with ingest.app.state.runtime.db.read() as session:
        config = (await session.get(Source, created["id"])).config  # type: ignore[union-attr]
    assert ingest.app.state.secrets.reveal(config["app_secret"]) == "meta-app-secret-0123"


async def test_source_secrets_are_encrypted_at_rest_and_rotate_to_a_new_key(database_url: str) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    secrets = {
        "app_secret": "meta-app-secret-0123456789",
        "verify_token": "verify-token-0123456789",
        "access_token": "EAAG-token-0123456789",
    }
    google_key = "google-key-0123456789"

    async def handshake(ingest: Ingest, source: dict[str, Any]) -> httpx.Response:
        query = {"hub.mode": "subscribe", "hub.verify_token": secrets["verify_token"], "hub.challenge": "4242"}
        return await ingest.client.get(source["webhook_url"], params=query)

    async with running_ingest(database_url, secret_key=old_key) as ingest:
        meta = await _source(ingest, "meta", config=secrets)
        google = await _source(ingest, "google_ads", config={})
        # A row an older version wrote, its secret in clear: still read, and encrypted by the rotation below.
        async with ingest.app.state.runtime.db.transaction() as session:
            await session.execute(
                update(Source).where(Source.id == google["id"]).values(config={"google_key": google_key})
            )
        stored = await _dump(ingest)
        assert not [name for name, value in secrets.items() if value in stored]
        assert "enc:v1:" in stored
        if database_url.startswith("sqlite"):
            path = Path(make_url(database_url).database or "")
            raw = b"".join(f.read_bytes() for f in path.parent.glob(path.name + "*"))
            assert not [name for name, value in secrets.items() if value.encode() in raw]
        answered = await handshake(ingest, meta)
        assert (answered.status_code, answered.text) == (200, "4242")

    async with running_ingest(database_url, secret_key=f"{new_key},{old_key}") as ingest:
        rotated = await ingest.client.post("/v1/admin/rotate-secrets", headers=ADMIN)
        assert rotated.status_code == 200, rotated.text
        assert rotated.json() == {"reencrypted": 4}
        assert (await ingest.client.post("/v1/admin/rotate-secrets")).status_code == 401

    async with running_ingest(database_url, secret_key=new_key) as ingest:
        newest_only = SecretBox([new_key])
        async with ingest.app.state.runtime.db.read() as session:
            configs = {s.id: s.config for s in (await session.execute(select(Source))).scalars()}
        assert {k: newest_only.reveal(v) for k, v in configs[meta["id"]].items()} == secrets
        assert configs[google["id"]]["google_key"].startswith("enc:v1:")
        assert newest_only.reveal(configs[google["id"]]["google_key"]) == google_key
        # The old key is gone from the setting and every secret still works.
        answered = await handshake(ingest, meta)
        assert (answered.status_code, answered.text) == (200, "4242")


async def test_source_changes_that_would_break_it_are_refused_and_named(ingest: Ingest) -> None:
    meta = await _source(ingest, "meta", config={"app_secret": "s"})
    url = f"/v1/sources/{meta['id']}"
    cases = [
        ({"config": {"appSecret": "typo"}}, "config.appSecret"),
        ({"config": {"graph_base_url": "not a url"}}, "config.graph_base_url"),
        ({"name": None}, "name"),
        ({"enabled": None}, "enabled"),
        ({"kind": "web"}, "kind"),
        ({"allowed_origins": ["https://example.com/form"]}, "allowed_origins.0"),
        ({"default_region": "XX"}, "default_region"),
    ]
    for body, named in cases:
        response = await ingest.client.patch(url, json=body, headers=ADMIN)
        assert response.status_code == 422, (body, response.text)
        assert named in [e["field"] for e in response.json()["detail"]], (body, response.json())
    unchanged = (await ingest.client.get(url, headers=ADMIN)).json()
    assert unchanged["config_keys"] == ["app_secret"] and unchanged["name"] == meta["name"]

    bad_create = await ingest.client.post(
        "/v1/sources", json={"kind": "typeform", "name": "t", "config": {"secret": "x", "token": 1}}, headers=ADMIN
    )
    assert bad_create.status_code == 422
    missing = await ingest.client.patch(f"/v1/sources/{uuid.uuid4()}", json={"name": "x"}, headers=ADMIN)
    assert missing.status_code == 404


async def test_a_source_base_url_into_the_internal_network_is_refused_naming_the_field(
    ingest: Ingest, database_url: str
) -> None:
    # The fetcher would call these with the source's access token: cloud metadata, loopback, private ranges.
    for kind, key, url in [
        ("meta", "graph_base_url", "http://169.254.169.254"),
        ("meta", "graph_base_url", "http://[::ffff:169.254.169.254]/latest/meta-data"),
        ("linkedin", "api_base_url", "http://127.0.0.1:8080/rest"),
        ("hubspot", "api_base_url", "http://10.1.2.3"),
    ]:
        created = await ingest.client.post(
            "/v1/sources", json={"kind": kind, "name": "n", "config": {key: url}}, headers=ADMIN
        )
        assert created.status_code == 422, (url, created.text)
        assert [e["field"] for e in created.json()["detail"]] == [f"config.{key}"], created.json()
    meta = await _source(ingest, "meta", config={"app_secret": "s"})
    patched = await ingest.client.patch(
        f"/v1/sources/{meta['id']}", json={"config": {"graph_base_url": "http://169.254.169.254"}}, headers=ADMIN
    )
    assert patched.status_code == 422
    (problem,) = patched.json()["detail"]
    assert problem["field"] == "config.graph_base_url" and "metadata" in problem["reason"]
    assert (await ingest.client.get(f"/v1/sources/{meta['id']}", headers=ADMIN)).json()["config_keys"] == ["app_secret"]

    # A loopback stand-in for the platform, allow-listed as tests and local runs need, is accepted.
    async with running_ingest(database_url, platform_allow_loopback=True) as allowed:
        local = await _source(allowed, "meta", config={"graph_base_url": "http://127.0.0.1:8080"})
        assert local["config_keys"] == ["graph_base_url"]
        metadata = await allowed.client.post(
            "/v1/sources",
            json={"kind": "meta", "name": "m", "config": {"graph_base_url": "http://169.254.169.254"}},
            headers=ADMIN,
        )
        assert metadata.status_code == 422  # loopback allowed does not open the metadata address


async def test_rotating_the_key_stops_the_old_one_at_once(ingest: Ingest) -> None:
    created = await _web_source(ingest)
    assert (await _post(ingest, {"email": _email()}, _key(created))).status_code == 202

    rotated = await ingest.client.post(f"/v1/sources/{created['id']}/rotate-key", headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["api_key"] != created["api_key"] and new["api_key_prefix"] == new["api_key"][:12]

    old = await _post(ingest, {"email": _email()}, _key(created))
    assert old.status_code == 401 and old.headers["www-authenticate"] == "Bearer"
    assert (await _post(ingest, {"email": _email()}, _key(new))).status_code == 202
    assert created["api_key"] not in await _dump(ingest) and new["api_key"] not in await _dump(ingest)

    meta = await _source(ingest, "meta")
    no_key = await ingest.client.post(f"/v1/sources/{meta['id']}/rotate-key", headers=ADMIN)
    assert no_key.status_code == 404


async def test_a_disabled_source_takes_no_leads_by_either_key(ingest: Ingest) -> None:
    created = await _web_source(ingest)
    url = f"/v1/sources/{created['id']}"
    assert (await ingest.client.patch(url, json={"enabled": False}, headers=ADMIN)).json()["enabled"] is False
    browser = {"X-Handoff-Key": created["publishable_key"], "Origin": ORIGIN}

    assert (await _post(ingest, {"email": _email()}, _key(created))).status_code == 401
    assert (await _post(ingest, {"email": _email()}, browser)).status_code == 401
    assert await _stored(ingest) == (0, 0)

    await ingest.client.patch(url, json={"enabled": True}, headers=ADMIN)
    assert (await _post(ingest, {"email": _email()}, _key(created))).status_code == 202


ADMIN_ROUTES = [
    ("GET", "/v1/sources"),
    ("POST", "/v1/sources"),
    ("GET", "/v1/sources/{source}"),
    ("PATCH", "/v1/sources/{source}"),
    ("POST", "/v1/sources/{source}/rotate-key"),
    ("GET", "/v1/leads"),
    ("GET", "/v1/leads/{lead}"),
    ("DELETE", "/v1/leads/{lead}"),
]


async def test_admin_routes_need_the_admin_token_compared_in_constant_time(
    ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = await _web_source(ingest)
    lead = (await _post(ingest, {"email": _email()})).json()["lead_id"]
    body = {"kind": "web", "name": "intruder"}
    wrong = [{}, {"Authorization": "Bearer not-the-admin-token-0000"}, _key(source), {"Authorization": ADMIN_TOKEN}]
    for method, template in ADMIN_ROUTES:
        path = template.format(source=source["id"], lead=lead)
        for headers in wrong:
            response = await ingest.client.request(
                method, path, headers=headers, json=body if method in ("POST", "PATCH") else None
            )
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"] == "unauthorized"
    assert len((await ingest.client.get("/v1/sources", headers=ADMIN)).json()["items"]) == 1
    assert (await ingest.client.get(f"/v1/leads/{lead}", headers=ADMIN)).json()["lead"] is not None

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert (await ingest.client.get("/v1/sources", headers={"Authorization": "Bearer guess"})).status_code == 401
    assert (b"guess", ADMIN_TOKEN.encode()) in compared


# -- posting leads -------------------------------------------------------------------------------------------


async def test_a_lead_on_a_source_key_is_stored_normalized_and_published(ingest_kafka: Ingest) -> None:
    ingest = ingest_kafka
    source = await _web_source(ingest, name="Website", default_region="GB")
    lead = {
        "first_name": " Ada ",
        "last_name": "Lovelace",
        "email": "Ada.Lovelace@EXAMPLE.org",
        "phone": "020 7946 0958",
        "country": "United Kingdom",
        "company": "Analytical\u0000 Engines\u202e",
        "page_url": "https://www.example.com/demo?utm_source=newsletter&gclid=Cj0-abc",
        "fbclid": "IwAR-xyz",
        "newsletter": "yes",
        "submitted_at": "2024-05-01T10:00:00+02:00",
        "plan": "enterprise",
    }
    response = await _post(ingest, lead, {**_key(source), "X-Correlation-Id": "corr-ada-1"})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "accepted" and accepted["duplicate_of"] is None
    assert accepted["correlation_id"] == "corr-ada-1"

    read = (await ingest.client.get(f"/v1/leads/{accepted['lead_id']}", headers=ADMIN)).json()
    assert read["source"] == {"id": source["id"], "kind": "web", "name": "Website"}
    stored = read["lead"]
    assert (stored["first_name"], stored["full_name"]) == ("Ada", "Ada Lovelace")
    assert (stored["email"], stored["phone"], stored["country"]) == (
        "Ada.Lovelace@example.org",
        "+442079460958",
        "GB",
    )
    assert stored["company"] == "Analytical Engines"  # control and bidi-override characters stripped
    assert stored["utm"] == {"source": "newsletter"} and stored["custom"] == {"plan": "enterprise"}
    assert stored["click_ids"] == {"fbclid": "IwAR-xyz", "gclid": "Cj0-abc"}
    assert stored["consent"] == {"marketing": True} and stored["submitted_at"] == "2024-05-01T08:00:00+00:00"

    (event,) = [e for e in await _events(ingest, LEADS_RECEIVED) if e.subject == accepted["lead_id"]]
    assert event.correlation_id == "corr-ada-1"
    assert event.data["lead"] == stored and event.data["source"] == read["source"]


async def test_a_browser_form_on_a_publishable_key_is_sent_to_the_thank_you_page(ingest: Ingest) -> None:
    source = await _web_source(ingest)
    email = _email()
    form = urlencode(
        [("_key", source["publishable_key"]), ("name", "Grace Hopper"), ("email", email), ("topics", "a"),
         ("topics", "b"), ("_gotcha", "")]
    )  # fmt: skip
    preflight = await ingest.client.options(
        "/v1/leads", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 204 and "POST" in preflight.headers["access-control-allow-methods"]

    response = await ingest.client.post(
        "/v1/leads",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": ORIGIN},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == THANK_YOU
    assert response.headers["access-control-allow-origin"] == ORIGIN

    (item,) = (await ingest.client.get("/v1/leads", params={"source_id": source["id"]}, headers=ADMIN)).json()["items"]
    assert item["lead"]["email"] == email and item["lead"]["last_name"] == "Hopper"
    assert item["lead"]["custom"] == {"topics": "a, b"}  # no key, no honeypot field, both checkboxes

    # From script: JSON with the key in a header; a page on the source's origin may read the answer.
    scripted = await _post(ingest, {"email": _email()}, {"X-Handoff-Key": source["publishable_key"], "Origin": ORIGIN})
    assert scripted.status_code == 202 and scripted.headers["access-control-allow-origin"] == ORIGIN
    invalid = await _post(ingest, {"email": "nope"}, {"X-Handoff-Key": source["publishable_key"], "Origin": ORIGIN})
    assert invalid.status_code == 422 and invalid.headers["access-control-allow-origin"] == ORIGIN


async def test_a_publishable_key_works_only_from_the_sources_origins(ingest: Ingest) -> None:
    source = await _web_source(ingest)
    key = source["publishable_key"]
    for origin in ("https://evil.example.net", "http://www.example.com", "null", None):
        headers = {"X-Handoff-Key": key, **({"Origin": origin} if origin else {})}
        response = await _post(ingest, {"email": _email()}, headers)
        assert response.status_code == 403, (origin, response.text)
        assert "access-control-allow-origin" not in response.headers
    form = urlencode({"_key": key, "email": _email()})
    posted = await ingest.client.post(
        "/v1/leads",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example.net"},
    )
    # A person at a form on a page not yet listed is thanked as usual; the lead waits in quarantine (see
    # test_ingest_quarantine), so nothing is stored as a lead here.
    assert posted.status_code == 303 and posted.headers["location"] == THANK_YOU
    # A publishable key is not a secret key: sent as a bearer token it is still held to the origins.
    assert (await _post(ingest, {"email": _email()}, {"Authorization": f"Bearer {key}"})).status_code == 403
    assert await _stored(ingest) == (0, 0)


async def test_a_filled_honeypot_looks_accepted_and_stores_nothing(ingest: Ingest) -> None:
    source = await _web_source(ingest)
    browser = {"X-Handoff-Key": source["publishable_key"], "Origin": ORIGIN}

    form = urlencode({"_key": source["publishable_key"], "email": _email(), "_gotcha": "http://spam.example"})
    trapped_form = await ingest.client.post(
        "/v1/leads", content=form, headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": ORIGIN}
    )
    trapped_json = await _post(ingest, {"email": _email(), "hp_website": "buy now"}, browser)
    real = await _post(ingest, {"email": _email()}, browser)

    assert trapped_form.status_code == 303 and trapped_form.headers["location"] == THANK_YOU
    assert trapped_json.status_code == real.status_code == 202
    assert trapped_json.json().keys() == real.json().keys()
    assert (await ingest.client.get(f"/v1/leads/{trapped_json.json()['lead_id']}", headers=ADMIN)).status_code == 404
    assert await _stored(ingest) == (1, 1)  # only the real one


async def test_browser_posts_are_rate_limited_per_address(database_url: str) -> None:
    async with running_ingest(database_url, public_rate_limit_per_minute=3) as ingest:
        source = await _web_source(ingest)
        browser = {"X-Handoff-Key": source["publishable_key"], "Origin": ORIGIN}
        answers = [(await _post(ingest, {"email": _email()}, browser)).status_code for _ in range(3)]
        limited = await _post(ingest, {"email": _email()}, browser)
        other_address = await ingest.client_from("198.51.100.20").post(
            "/v1/leads", json={"email": _email()}, headers=browser
        )
        back_end = await _post(ingest, {"email": _email()}, _key(source))

        assert answers == [202, 202, 202]
        assert limited.status_code == 429 and limited.json()["error"] == "too_many_requests"
        assert 1 <= int(limited.headers["retry-after"]) <= 20  # one token back at 3 a minute
        assert limited.headers["access-control-allow-origin"] == ORIGIN  # the page can show "slow down"
        assert other_address.status_code == 202 and back_end.status_code == 202
        assert (await _stored(ingest))[0] == 5


# -- bad input ------------------------------------------------------------------------------------------------


async def _chunks(total: int, size: int = 8192) -> AsyncIterator[bytes]:
    yield b'{"email": "big@example.org", "message": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("over the limit", {"content": b'{"message": "' + b"x" * 70_000 + b'"}'}, 413, "payload_too_large"),
    ("streamed over the limit", {"content": lambda: _chunks(100_000)}, 413, "payload_too_large"),
    ("plain text", {"content": b"email=a@b.co", "headers": {"Content-Type": "text/plain"}}, 415,
     "unsupported_media_type"),
    ("multipart", {"files": {"email": (None, "a@b.co")}}, 415, "unsupported_media_type"),
    ("malformed JSON", {"content": b'{"email": "a@b.co",'}, 400, "malformed_json"),
    ("not UTF-8", {"content": b'{"email": "\xff"}'}, 400, "malformed_json"),
    ("empty", {"content": b""}, 400, "bad_request"),
    ("a JSON array", {"json": [{"email": "a@b.co"}]}, 422, "validation_failed"),
    ("form not UTF-8", {"content": b"email=%ff", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
     422, "validation_failed"),
    ("too many custom fields", {"json": {"email": "a@b.co", **{f"extra_{i}": "v" for i in range(51)}}}, 422,
     "validation_failed"),
    ("bad idempotency key", {"json": {"email": "a@b.co"}, "headers": {"Idempotency-Key": "k" * 256}}, 422,
     "validation_failed"),
]  # fmt: skip


async def test_bad_input_is_refused_with_its_own_status_and_nothing_is_stored(ingest: Ingest) -> None:
    for what, request, status, code in BAD_REQUESTS:
        kwargs = dict(request)
        if callable(kwargs.get("content")):
            kwargs["content"] = kwargs["content"]()
        headers = {**ADMIN, **kwargs.pop("headers", {})}
        if "content" in kwargs and "Content-Type" not in headers and "files" not in kwargs:
            headers["Content-Type"] = "application/json"
        response = await ingest.client.post("/v1/leads", headers=headers, **kwargs)
        assert response.status_code == status, (what, response.status_code, response.text)
        assert response.headers["content-type"] == "application/json", what
        assert not code or response.json()["error"] == code, (what, response.json())
    assert await _stored(ingest) == (0, 0)
    # The same app stores a good lead, so the counts above are real.
    assert (await _post(ingest, {"email": _email()})).status_code == 202
    assert await _stored(ingest) == (1, 1)


async def test_json_nested_too_deep_from_a_publishable_key_is_a_400_naming_the_body(ingest: Ingest) -> None:
    source = await _web_source(ingest)
    browser = {"X-Handoff-Key": source["publishable_key"], "Origin": ORIGIN, "Content-Type": "application/json"}
    for deep in (
        b'{"email": "deep@example.org", "custom": ' + b'{"a":' * 500 + b"1" + b"}" * 500 + b"}",
        b'{"email": "deep@example.org", "tags": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    ):
        response = await ingest.client.post("/v1/leads", content=deep, headers=browser)
        assert response.status_code == 400, response.text
        assert response.json()["detail"] == [{"field": "body", "reason": "JSON nested deeper than 32 levels"}]
    assert await _stored(ingest) == (0, 0)
    # Brackets inside strings are text: a message full of them is an ordinary lead.
    message = {"email": _email(), "message": "[{" * 1000}
    assert (await _post(ingest, message, browser)).status_code == 202


async def test_malformed_fields_are_each_named_with_a_reason(ingest: Ingest) -> None:
    # Keep-and-flag (issue 11) accepts unreadable values; only malformed ones (wrong type, over-long) are refused.
    lead = {
        "email": "ada@example.com",
        "country": "Atlantis",
        "first_name": "A" * 101,
        "company": {"name": "Acme"},
        "utm_source": ["a", {"b": 1}],
    }
    response = await _post(ingest, lead)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_failed"
    problems = {e["field"]: e["reason"] for e in response.json()["detail"]}
    assert set(problems) == {"first_name", "company", "utm.source"}
    assert all(reason for reason in problems.values())
    assert "100" in problems["first_name"]
    assert await _stored(ingest) == (0, 0)


async def test_a_streamed_body_over_the_limit_is_refused_before_it_ends(tmp_path: Path, kafka_bootstrap: str) -> None:
    """A real uvicorn: the 413 arrives while the client is still sending, so the body was never buffered whole."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANDOFF_", "INGEST_"))}
    env.update(
        HANDOFF_ENV="test",
        HANDOFF_ADMIN_TOKEN=ADMIN_TOKEN,
        HANDOFF_KAFKA_BOOTSTRAP=kafka_bootstrap,
        HANDOFF_TOPIC_NAMESPACE=f"t{uuid.uuid4().hex[:10]}.",
        HANDOFF_DATA_DIR=str(tmp_path / "data"),
    )
    service = Service("ingest", free_port(), env, tmp_path / "ingest.log")
    service.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(
            b"POST /v1/leads HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 8192
        for _ in range(10):  # 80 KiB, and never the final zero-length chunk
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        writer.close()
        assert status_line.split()[1] == b"413", status_line
        async with httpx.AsyncClient(base_url=service.url) as client:
            listed = await client.get("/v1/leads", headers=ADMIN)
        assert listed.json()["items"] == []
    finally:
        service.stop()
    assert "Traceback" not in service.logs()


# -- the store cannot commit ------------------------------------------------------------------------------------


async def _run_sql(database_url: str, statement: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def test_when_the_store_cannot_commit_the_answer_is_503_and_nothing_is_half_kept(
    ingest: Ingest, database_url: str
) -> None:
    source = await _web_source(ingest)
    # The repeat index goes missing under the app: the lead row is written first, then the transaction fails.
    await _run_sql(database_url, "DROP TABLE lead_identities")

    response = await _post(ingest, {"email": _email()}, _key(source))
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1" and response.json()["error"] == "unavailable"
    assert await _stored(ingest) == (0, 0)

    await _run_sql(database_url, "DROP TABLE leads")
    for path in ("/v1/leads", f"/v1/leads/{uuid.uuid4()}"):
        read = await ingest.client.get(path, headers=ADMIN)
        assert read.status_code == 503, (path, read.text)


@pytest.mark.postgres
async def test_a_failover_to_a_read_only_database_gives_503_and_the_retry_is_kept_once(pg_database: str) -> None:
    url = make_url(pg_database)
    admin_dsn = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = url.database

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(statement)
            # Every open connection of the app is cut: the pool reconnects and gets the new default.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
        finally:
            await conn.close()

    async with running_ingest(pg_database) as ingest:
        source = await _web_source(ingest)
        lead = {"email": _email()}
        headers = {**_key(source), "Idempotency-Key": "retry-me"}
        await admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')

        refused = await _post(ingest, lead, headers)
        assert refused.status_code == 503, refused.text
        assert await _stored(ingest) == (0, 0)

        await admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
        kept = await _post(ingest, lead, headers)
        again = await _post(ingest, lead, headers)
        assert kept.status_code == again.status_code == 202
        assert kept.json() == again.json()
        assert await _stored(ingest) == (1, 1)


async def test_expired_idempotency_keys_are_purged_and_fresh_ones_kept(database_url: str) -> None:
    async with running_ingest(database_url, idempotency_ttl_hours=1, idempotency_purge_interval_s=0.1) as ingest:
        source = await _web_source(ingest)
        first = {"email": _email()}
        old = await _post(ingest, first, {**_key(source), "Idempotency-Key": "old-key"})
        ingest.clock.advance(minutes=50)
        fresh = await _post(ingest, {"email": _email()}, {**_key(source), "Idempotency-Key": "fresh-key"})
        assert old.status_code == fresh.status_code == 202
        ingest.clock.advance(minutes=20)  # the old key is 70 minutes old now, the fresh one 20

        async def keys() -> list[str]:
            async with ingest.app.state.runtime.db.read() as session:
                return list((await session.execute(select(IdempotencyRecord.response))).scalars())

        async def only_the_fresh_one() -> bool:
            return [r["lead_id"] for r in await keys()] == [fresh.json()["lead_id"]]

        await wait_until_async(only_the_fresh_one, timeout=10, what="the expired key purged")
        # The purged key starts afresh (a new lead, neither a replay nor a 409); the fresh one is still held.
        reused = await _post(ingest, {"email": _email()}, {**_key(source), "Idempotency-Key": "fresh-key"})
        assert reused.status_code == 409  # still held: another body under it is refused
        again = await _post(ingest, first, {**_key(source), "Idempotency-Key": "old-key"})
        assert again.status_code == 202 and again.headers.get("idempotent-replayed") is None
        assert again.json()["lead_id"] != old.json()["lead_id"]


# -- no duplicates ---------------------------------------------------------------------------------------------


async def test_fifty_concurrent_posts_with_one_idempotency_key_store_and_publish_one_lead(
    ingest_kafka: Ingest,
) -> None:
    ingest = ingest_kafka
    source = await _web_source(ingest)
    lead = {"email": _email(), "company": "Burst Ltd"}
    headers = {**_key(source), "Idempotency-Key": "burst-1"}

    responses = await asyncio.gather(*[_post(ingest, lead, headers) for _ in range(50)])

    assert {r.status_code for r in responses} == {202}
    assert all(r.json() == responses[0].json() for r in responses)  # the same response, not only the same id
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 49
    conflict = await _post(ingest, {**lead, "company": "Other"}, headers)
    assert conflict.status_code == 409 and conflict.json()["error"] == "idempotency_key_reused"
    # Keys belong to their caller: the same key from the admin is a different request.
    assert (await _post(ingest, lead, {**ADMIN, "Idempotency-Key": "burst-1"})).json()["lead_id"] != (
        responses[0].json()["lead_id"]
    )
    events = await _events(ingest, LEADS_RECEIVED)
    assert [e.subject for e in events].count(responses[0].json()["lead_id"]) == 1
    assert len(events) == 2


async def test_the_same_person_within_the_window_is_a_repeat_and_later_is_not(ingest_kafka: Ingest) -> None:
    ingest = ingest_kafka
    email = _email()
    first = (await _post(ingest, {"email": email, "phone": "+4930901820"})).json()
    ingest.clock.advance(hours=1)
    by_email = (await _post(ingest, {"email": email.upper().replace("@EXAMPLE.ORG", "@example.org")})).json()
    ingest.clock.advance(hours=1)
    by_phone = (await _post(ingest, {"email": _email(), "phone": "+49 30 901820"})).json()
    stranger = (await _post(ingest, {"email": _email()})).json()
    ingest.clock.advance(hours=ingest.settings.repeat_window_hours + 1)
    much_later = (await _post(ingest, {"email": email})).json()

    assert by_email["duplicate_of"] == first["lead_id"] and by_phone["duplicate_of"] == first["lead_id"]
    assert first["duplicate_of"] is None and stranger["duplicate_of"] is None
    assert much_later["duplicate_of"] is None
    stored = (await ingest.client.get(f"/v1/leads/{by_phone['lead_id']}", headers=ADMIN)).json()
    assert stored["duplicate_of"] == first["lead_id"]
    published = {e.subject: e.data["duplicate_of"] for e in await _events(ingest, LEADS_RECEIVED)}
    assert published == {
        first["lead_id"]: None,
        by_email["lead_id"]: first["lead_id"],
        by_phone["lead_id"]: first["lead_id"],
        stranger["lead_id"]: None,
        much_later["lead_id"]: None,
    }


# -- erasure and reading -------------------------------------------------------------------------------------------


async def test_erasing_a_lead_removes_its_personal_data_and_tells_the_other_services(ingest_kafka: Ingest) -> None:
    ingest = ingest_kafka
    email, phone, name = _email(), "+4915112345678", "Erika Mustermann"
    lead_id = (await _post(ingest, {"email": email, "phone": phone, "full_name": name})).json()["lead_id"]
    await _events(ingest, LEADS_RECEIVED)  # published, so the outbox no longer holds it either

    erased = await ingest.client.delete(f"/v1/leads/{lead_id}", headers=ADMIN)
    assert erased.status_code == 202 and erased.json() == {"lead_id": lead_id, "status": "erased"}
    again = await ingest.client.delete(f"/v1/leads/{lead_id}", headers=ADMIN)
    assert again.status_code == 202

    read = (await ingest.client.get(f"/v1/leads/{lead_id}", headers=ADMIN)).json()
    assert read["lead"] is None and read["erased_at"] is not None
    stored = await _dump(ingest)
    for personal in (email, phone, name, email.split("@")[0]):
        assert personal not in stored
    async with ingest.app.state.runtime.db.read() as session:
        identities = await session.execute(select(LeadIdentity.identity).where(LeadIdentity.lead_id == lead_id))
        assert set(identities.scalars()) == {"erased"}
    # Nothing links the person to the erased lead any more.
    assert (await _post(ingest, {"email": email})).json()["duplicate_of"] is None

    (event,) = await _events(ingest, LEADS_ERASED)  # erasing twice is one event
    assert event.type == "lead.erased" and event.subject == lead_id and event.data["lead_id"] == lead_id
    assert (await ingest.client.delete(f"/v1/leads/{uuid.uuid4()}", headers=ADMIN)).status_code == 404


async def test_a_persons_leads_are_found_by_email_or_phone_and_erased_all_at_once(ingest_kafka: Ingest) -> None:
    ingest = ingest_kafka
    email, phone = _email(), "+4915112345678"
    first = (await _post(ingest, {"email": email, "phone": phone, "full_name": "Erika Mustermann"})).json()
    ingest.clock.advance(hours=100)  # past the repeat window: a lead of its own, not a repeat
    second = (await _post(ingest, {"email": email.upper().replace("@EXAMPLE.ORG", "@example.org")})).json()
    ingest.clock.advance(minutes=1)
    by_phone = (await _post(ingest, {"email": _email(), "phone": "0151 12345678", "country": "DE"})).json()
    stranger = (await _post(ingest, {"email": _email(), "phone": "+4915199999999"})).json()

    async def subject(**params: str) -> list[str]:
        response = await ingest.client.get("/v1/leads", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return [item["lead_id"] for item in response.json()["items"]]

    assert await subject(email=f" {email.upper()} ") == [second["lead_id"], first["lead_id"]]
    assert await subject(phone="0151 1234 5678", region="de") == [by_phone["lead_id"], first["lead_id"]]
    assert await subject(email=email, phone=phone) == [by_phone["lead_id"], second["lead_id"], first["lead_id"]]
    refused = await ingest.client.get("/v1/leads", params={"email": "not-an-email"}, headers=ADMIN)
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "email"
    key = _key(await _web_source(ingest))
    assert (await ingest.client.get("/v1/leads", params={"email": email}, headers=key)).status_code == 401
    assert (await ingest.client.post("/v1/subjects/erase", json={"email": email}, headers=key)).status_code == 401

    erased = await ingest.client.post("/v1/subjects/erase", json={"email": email.title()}, headers=ADMIN)
    assert erased.status_code == 202, erased.text
    assert sorted(erased.json()["erased"]) == sorted([first["lead_id"], second["lead_id"]])
    again = await ingest.client.post("/v1/subjects/erase", json={"email": email}, headers=ADMIN)
    assert again.json() == {"erased": [], "count": 0}
    assert await subject(email=email) == []
    for lead_id in (first["lead_id"], second["lead_id"]):
        assert (await ingest.client.get(f"/v1/leads/{lead_id}", headers=ADMIN)).json()["lead"] is None
    # The same phone on another lead is another request: only the leads matched by the email went.
    assert await subject(phone=phone) == [by_phone["lead_id"]]
    assert (await ingest.client.get(f"/v1/leads/{stranger['lead_id']}", headers=ADMIN)).json()["lead"] is not None

    events = await _events(ingest, LEADS_ERASED)
    assert sorted(e.subject for e in events) == sorted([first["lead_id"], second["lead_id"]])
    assert all(e.type == "lead.erased" for e in events)


async def test_leads_are_listed_newest_first_page_by_page(ingest: Ingest) -> None:
    web, other = await _web_source(ingest), await _web_source(ingest, name="Other")
    started = ingest.clock.now
    posted = []
    for _ in range(7):
        ingest.clock.advance(seconds=1)
        posted.append((await _post(ingest, {"email": _email()}, _key(web))).json()["lead_id"])
        await _post(ingest, {"email": _email()}, _key(other))
    ingest.clock.advance(seconds=1)

    seen, cursor, pages = [], None, 0
    while True:
        params = {"source_id": web["id"], "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await ingest.client.get("/v1/leads", params=params, headers=ADMIN)).json()
        seen += [item["lead_id"] for item in page["items"]]
        assert all(item["source"]["name"] == "web source" for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == posted[::-1] and pages == 3

    since = (started + timedelta(seconds=5)).astimezone(UTC)
    recent = await ingest.client.get(
        "/v1/leads", params={"source_id": web["id"], "since": since.isoformat()}, headers=ADMIN
    )
    assert [item["lead_id"] for item in recent.json()["items"]] == posted[:3:-1]
    # The same instant written with another offset means the same leads.
    in_berlin = since.astimezone(timezone(timedelta(hours=2))).isoformat()
    same = await ingest.client.get("/v1/leads", params={"source_id": web["id"], "since": in_berlin}, headers=ADMIN)
    assert same.json()["items"] == recent.json()["items"]

    everything = (await ingest.client.get("/v1/leads", params={"limit": 500}, headers=ADMIN)).json()
    assert len(everything["items"]) == 14 and everything["next_cursor"] is None
    bad = await ingest.client.get("/v1/leads", params={"cursor": "not-a-cursor"}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "cursor"
