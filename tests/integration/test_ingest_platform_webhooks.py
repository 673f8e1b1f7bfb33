"""Platform webhooks end to end inside one ingest app: real SQLite, the real broker, and a real HTTP server
standing in for the Meta Graph, LinkedIn and HubSpot APIs (it can be told to fail, then recover).

Signatures are computed here from each platform's published scheme, not with the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from common.envelope import Event
from common.outbox import backlog
from common.topics import LEADS_RECEIVED
from ingest.app import create_app
from ingest.settings import IngestSettings
from ingest.store import PlatformFetch
from tests.support.stack import ADMIN, ADMIN_TOKEN, read_topic, wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

GRAPH_VERSION = "v21.0"
META_TOKEN = "EAAG-page-access-token-0123456789"
META_APP_SECRET = "meta-app-secret-0123456789"
LINKEDIN_TOKEN = "AQV-linkedin-token-0123456789"
HUBSPOT_TOKEN = "pat-na1-hubspot-token-0123456789"
FETCH_TIMEOUT_S = 0.5


# -- a stand-in for the platforms' APIs, on a real socket --------------------------------------------------


class FakePlatforms:
    """Serves Graph leads, LinkedIn responses and forms, HubSpot contacts; checks each platform's auth."""

    def __init__(self) -> None:
        self.meta_leads: dict[str, dict[str, Any]] = {}
        self.linkedin_responses: dict[str, dict[str, Any]] = {}
        self.linkedin_forms: dict[str, dict[str, Any]] = {}
        self.hubspot_contacts: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        self._failures: dict[str, list[str]] = {}  # path -> modes still to play ("500" | "timeout")
        self._failing: set[str] = set()  # paths that answer 500 until released
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-platforms", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, path: str, *modes: str) -> None:
        with self._lock:
            self._failures.setdefault(path, []).extend(modes)

    def fail_until_released(self, path: str) -> None:
        with self._lock:
            self._failing.add(path)

    def release(self, path: str) -> None:
        with self._lock:
            self._failing.discard(path)

    def calls(self, path: str) -> list[tuple[str, dict[str, list[str]], dict[str, str]]]:
        with self._lock:
            return [r for r in self.requests if r[0] == path]

    def _failure_for(self, path: str) -> str | None:
        with self._lock:
            queued = self._failures.get(path)
            if queued:
                return queued.pop(0)
            return "500" if path in self._failing else None

    def _answer(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, Any]:
        if m := re.fullmatch(rf"/{re.escape(GRAPH_VERSION)}/([^/]+)", path):
            if "access_token" in query:  # a token in the URL lands in every proxy's and server's logs
                return 400, {"error": {"message": "Token in the query string.", "type": "OAuthException", "code": 1}}
            token = headers.get("authorization", "").removeprefix("Bearer ")
            # Meta's appsecret_proof, computed here from its published definition (hex HMAC-SHA256 of the token).
            proof = hmac.new(META_APP_SECRET.encode(), token.encode(), hashlib.sha256).hexdigest()
            if query.get("appsecret_proof") != [proof]:
                return 400, {"error": {"message": "Invalid appsecret_proof.", "type": "OAuthException", "code": 100}}
            if headers.get("authorization") != f"Bearer {META_TOKEN}":
                return 400, {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}
            lead = self.meta_leads.get(m.group(1))
            return (200, lead) if lead else (404, {"error": {"code": 100}})
        if m := re.fullmatch(r"/rest/leadFormResponses/([^/]+)", path):
            if not _linkedin_auth_ok(headers):
                return 401, {"status": 401, "serviceErrorCode": 65600}
            response = self.linkedin_responses.get(m.group(1))
            return (200, response) if response else (404, {"status": 404})
        if m := re.fullmatch(r"/rest/leadForms/(\d+)", path):
            if not _linkedin_auth_ok(headers):
                return 401, {"status": 401, "serviceErrorCode": 65600}
            form = self.linkedin_forms.get(m.group(1))
            return (200, form) if form else (404, {"status": 404})
        if m := re.fullmatch(r"/crm/v3/objects/contacts/([^/]+)", path):
            if headers.get("authorization") != f"Bearer {HUBSPOT_TOKEN}":
                return 401, {"status": "error", "category": "INVALID_AUTHENTICATION"}
            contact = self.hubspot_contacts.get(m.group(1))
            return (200, contact) if contact else (404, {"status": "error", "category": "OBJECT_NOT_FOUND"})
        return 404, {"error": "no such endpoint"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        platforms = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with platforms._lock:
                    platforms.requests.append((parts.path, query, headers))
                failure = platforms._failure_for(parts.path)
                if failure == "timeout":
                    time.sleep(FETCH_TIMEOUT_S * 3)  # the client gives up first
                    status, body = 504, {"error": "too late"}
                elif failure == "500":
                    status, body = 500, {"error": {"message": "An unexpected error has occurred.", "code": 2}}
                else:
                    status, body = platforms._answer(parts.path, query, headers)
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client timed out and closed the connection

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler


def _linkedin_auth_ok(headers: dict[str, str]) -> bool:
    return (
        headers.get("authorization") == f"Bearer {LINKEDIN_TOKEN}"
        and re.fullmatch(r"\d{6}", headers.get("linkedin-version", "")) is not None
        and headers.get("x-restli-protocol-version") == "2.0.0"
    )


# -- the app under test ------------------------------------------------------------------------------------


@dataclass
class Ingest:
    app: FastAPI
    client: httpx.AsyncClient
    settings: IngestSettings


@pytest.fixture(scope="module")
def platforms() -> Iterator[FakePlatforms]:
    server = FakePlatforms()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def ingest(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> AsyncIterator[Ingest]:
    db_path: Path = tmp_path_factory.mktemp("ingest") / "ingest.db"
    settings = IngestSettings(
        env="test",
        admin_token=ADMIN_TOKEN,
        kafka_bootstrap=kafka_bootstrap,
        topic_namespace=f"t{uuid.uuid4().hex[:10]}.",
        topic_partitions=1,
        outbox_poll_interval_s=0.05,
        log_format="console",
        platform_fetch_timeout_s=FETCH_TIMEOUT_S,
        platform_fetch_backoff_s=0.05,
        platform_fetch_max_backoff_s=0.3,
        platform_fetch_poll_interval_s=0.05,
        platform_allow_loopback=True,  # the platforms' stand-in listens on 127.0.0.1
        **{"INGEST_DATABASE_URL": f"sqlite+aiosqlite:///{db_path}"},
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test") as client:
            yield Ingest(app, client, settings)


async def _create_source(ingest: Ingest, kind: str, config: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = await ingest.client.post(
        "/v1/sources", json={"kind": kind, "name": f"{kind} test", "config": config, **fields}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _leads(ingest: Ingest, source_id: str) -> list[dict[str, Any]]:
    response = await ingest.client.get("/v1/leads", params={"source_id": source_id}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def _pending_fetches(ingest: Ingest, source_id: str) -> list[PlatformFetch]:
    async with ingest.app.state.runtime.db.read() as session:
        rows = await session.execute(select(PlatformFetch).where(PlatformFetch.source_id == source_id))
        return list(rows.scalars())


async def _received_events(ingest: Ingest, kafka_bootstrap: str) -> list[Event]:
    """Every lead.received published so far (waits until the outbox is empty, so none is still on its way)."""
    runtime = ingest.app.state.runtime

    async def drained() -> bool:
        return await backlog(runtime.db, runtime.outbox) == 0

    await wait_until_async(drained, timeout=30, what="the outbox to drain")
    records = await read_topic(kafka_bootstrap, ingest.settings.topic(LEADS_RECEIVED), timeout=3)
    return [Event.from_record(r.key, r.value, r.headers) for r in records]


def _email() -> str:
    return f"lead-{uuid.uuid4().hex[:8]}@example.org"


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- each platform's signing scheme, as published ----------------------------------------------------------


def _meta_headers(body: bytes, secret: str = META_APP_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


def _linkedin_headers(body: bytes, secret: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), b"hmacsha256=" + body, hashlib.sha256).hexdigest()
    return {"X-LI-Signature": digest, "Content-Type": "application/json"}


def _typeform_headers(body: bytes, secret: str) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {"Typeform-Signature": f"sha256={digest}", "Content-Type": "application/json"}


def _webflow_headers(body: bytes, secret: str, ts_ms: int | None = None) -> dict[str, str]:
    ts = str(ts_ms if ts_ms is not None else _now_ms())
    digest = hmac.new(secret.encode(), ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"x-webflow-timestamp": ts, "x-webflow-signature": digest, "Content-Type": "application/json"}


def _hubspot_headers(body: bytes, secret: str, uri: str, ts_ms: int | None = None) -> dict[str, str]:
    ts = str(ts_ms if ts_ms is not None else _now_ms())
    message = b"POST" + uri.encode() + body + ts.encode()
    digest = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    return {
        "X-HubSpot-Signature-v3": digest,
        "X-HubSpot-Request-Timestamp": ts,
        "Content-Type": "application/json",
    }


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _meta_notification(leadgen_id: str, page_id: str = "1122334455") -> bytes:
    change = {
        "field": "leadgen",
        "value": {
            "leadgen_id": leadgen_id,
            "form_id": "998877",
            "page_id": page_id,
            "ad_id": "55443322",
            "created_time": int(time.time()),
        },
    }
    return _dumps({"object": "page", "entry": [{"id": page_id, "time": int(time.time()), "changes": [change]}]})


def _graph_lead(leadgen_id: str, email: str) -> dict[str, Any]:
    return {
        "id": leadgen_id,
        "created_time": "2024-05-01T10:00:00+00:00",
        "form_id": "998877",
        "field_data": [
            {"name": "full_name", "values": ["Ada Lovelace"]},
            {"name": "email", "values": [email]},
            {"name": "company_name", "values": ["Analytical Engines"]},
        ],
    }


def _google_payload(lead_id: str, email: str, key: str | None, *, is_test: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "lead_id": lead_id,
        "api_version": "1.0",
        "form_id": 40000000001,
        "campaign_id": 20000000002,
        "adgroup_id": 30000000003,
        "creative_id": 50000000004,
        "gcl_id": "EAIaIQobChMI-test",
        "is_test": is_test,
        "user_column_data": [
            {"column_name": "Full Name", "string_value": "Grace Hopper", "column_id": "FULL_NAME"},
            {"column_name": "User Email", "string_value": email, "column_id": "EMAIL"},
            {"column_name": "Company Name", "string_value": "Navy", "column_id": "COMPANY_NAME"},
        ],
    }
    if key is not None:
        payload["google_key"] = key
    return payload


def _linkedin_notification(response_id: str, action: str = "CREATED") -> bytes:
    return _dumps(
        {
            "type": "LEAD_ACTION",
            "leadGenFormResponse": f"urn:li:leadGenFormResponse:{response_id}",
            "leadGenForm": "urn:li:leadGenForm:7001",
            "owner": {"sponsoredAccount": "urn:li:sponsoredAccount:5001"},
            "leadType": "SPONSORED",
            "leadAction": action,
            "occurredAt": _now_ms(),
        }
    )


LINKEDIN_FORM = {
    "id": 7001,
    "name": "Demo request",
    "content": {
        "questions": [
            {"questionId": 11, "name": "firstName", "predefinedField": "FIRST_NAME"},
            {"questionId": 12, "name": "lastName", "predefinedField": "LAST_NAME"},
            {"questionId": 13, "name": "emailAddress", "predefinedField": "EMAIL"},
            {"questionId": 14, "name": "Team size"},
        ]
    },
}


def _linkedin_response(response_id: str, email: str) -> dict[str, Any]:
    def text(question: int, answer: str) -> dict[str, Any]:
        return {"questionId": question, "answerDetails": {"textQuestionAnswer": {"answer": answer}}}

    return {
        "id": response_id,
        "owner": {"sponsoredAccount": "urn:li:sponsoredAccount:5001"},
        "leadType": "SPONSORED",
        "versionedLeadGenFormUrn": "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:7001,1)",
        "submittedAt": _now_ms(),
        "testLead": False,
        "formResponse": {
            "answers": [text(11, "Katherine"), text(12, "Johnson"), text(13, email), text(14, "11-50")],
            "consentResponses": [],
        },
    }


def _typeform_payload(event_id: str, email: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "form_response",
        "form_response": {
            "form_id": "lT4Z3j",
            "token": "a3a12ec67a1365927098a606107fac15",
            "submitted_at": "2024-05-01T10:00:00Z",
            "hidden": {"utm_source": "newsletter"},
            "answers": [
                {
                    "type": "text",
                    "text": "Margaret",
                    "field": {"id": "f1", "type": "short_text", "ref": "first_name"},
                },
                {
                    "type": "email",
                    "email": email,
                    "field": {"id": "f2", "type": "email", "ref": "work_email_q"},
                },
            ],
        },
    }


def _webflow_payload(submission_id: str, email: str) -> dict[str, Any]:
    return {
        "triggerType": "form_submission",
        "payload": {
            "name": "Contact form",
            "siteId": "65427cf400e02b306eaa049c",
            "data": {"First Name": "Hedy", "Last Name": "Lamarr", "Email": email},
            "submittedAt": "2024-05-01T10:00:00.000Z",
            "id": submission_id,
            "formId": "65429eadebe8a9f3a30f62d0",
        },
    }


def _hubspot_events(contact_id: int) -> list[dict[str, Any]]:
    return [
        {
            "eventId": 100,
            "subscriptionId": 2001,
            "portalId": 62515,
            "appId": 54321,
            "occurredAt": _now_ms(),
            "subscriptionType": "contact.creation",
            "attemptNumber": 0,
            "objectId": contact_id,
            "changeFlag": "CREATED",
            "changeSource": "CRM",
        }
    ]


def _hubspot_contact(contact_id: int, email: str) -> dict[str, Any]:
    return {
        "id": str(contact_id),
        "properties": {
            "email": email,
            "firstname": "Radia",
            "lastname": "Perlman",
            "company": "Spanning Tree",
            "jobtitle": "Engineer",
            "hs_object_id": str(contact_id),
        },
        "createdAt": "2024-05-01T10:00:00.000Z",
        "updatedAt": "2024-05-01T10:00:00.000Z",
        "archived": False,
    }


# -- handshakes --------------------------------------------------------------------------------------------


async def test_meta_handshake_echoes_the_challenge_as_text_and_refuses_a_wrong_token(ingest: Ingest) -> None:
    source = await _create_source(ingest, "meta", {"app_secret": META_APP_SECRET, "verify_token": "my-verify-token"})
    url = source["webhook_url"]

    ok = await ingest.client.get(
        url,
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": "my-verify-token",
            "hub.challenge": "1158201444",
        },
    )
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain")
    assert ok.text == "1158201444"

    wrong = await ingest.client.get(
        url, params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1158201444"}
    )
    assert wrong.status_code == 403
    assert "1158201444" not in wrong.text


async def test_linkedin_handshake_answers_with_the_hmac_of_the_challenge_code(ingest: Ingest) -> None:
    secret = "li-client-secret-" + uuid.uuid4().hex
    source = await _create_source(ingest, "linkedin", {"client_secret": secret})
    code = str(uuid.uuid4())

    response = await ingest.client.get(source["webhook_url"], params={"challengeCode": code})

    assert response.status_code == 200
    expected = hmac.new(secret.encode(), code.encode(), hashlib.sha256).hexdigest()
    assert response.json() == {"challengeCode": code, "challengeResponse": expected}
    assert (await ingest.client.get(source["webhook_url"])).status_code == 400


async def test_linkedin_handshake_signs_no_challenge_code_but_a_uuid(ingest: Ingest) -> None:
    secret = "li-client-secret-" + uuid.uuid4().hex
    source = await _create_source(ingest, "linkedin", {"client_secret": secret})
    # What an attacker would want signed: the exact message behind a notification's X-LI-Signature.
    forged = 'hmacsha256={"leadGenFormResponse":"urn:li:leadGenFormResponse:1","leadAction":"DELETED"}'

    response = await ingest.client.get(source["webhook_url"], params={"challengeCode": forged})

    assert response.status_code == 400
    assert response.json()["detail"][0]["field"] == "challengeCode"
    assert "challengeResponse" not in response.text
    assert hmac.new(secret.encode(), forged.encode(), hashlib.sha256).hexdigest() not in response.text


async def test_platforms_without_a_handshake_refuse_the_get(ingest: Ingest) -> None:
    source = await _create_source(ingest, "typeform", {"secret": "tf-secret"})
    response = await ingest.client.get(source["webhook_url"])
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


# -- Meta: notification -> Graph API fetch, surviving an outage --------------------------------------------


async def test_meta_lead_is_fetched_after_a_graph_outage_and_stored_exactly_once(
    ingest: Ingest, platforms: FakePlatforms, kafka_bootstrap: str
) -> None:
    source = await _create_source(
        ingest,
        "meta",
        {
            "app_secret": META_APP_SECRET,
            "verify_token": "vt",
            "access_token": META_TOKEN,
            "graph_base_url": platforms.url,
        },
    )
    leadgen_id = str(uuid.uuid4().int)[:16]
    email = _email()
    platforms.meta_leads[leadgen_id] = _graph_lead(leadgen_id, email)
    graph_path = f"/{GRAPH_VERSION}/{leadgen_id}"
    platforms.fail_until_released(graph_path)
    body = _meta_notification(leadgen_id)

    first = await ingest.client.post(source["webhook_url"], content=body, headers=_meta_headers(body))
    assert first.status_code == 200, first.text
    assert first.json()["queued"] == 1
    redelivered = await ingest.client.post(source["webhook_url"], content=body, headers=_meta_headers(body))
    assert redelivered.status_code == 200
    assert redelivered.json()["queued"] == 0

    # While the Graph API fails, the notification is kept and retried, never dropped.
    async def retried_twice() -> list[PlatformFetch] | None:
        rows = await _pending_fetches(ingest, source["id"])
        return rows if rows and rows[0].attempts >= 2 else None

    (row,) = await wait_until_async(retried_twice, timeout=20, what="two failed Graph API attempts")
    assert row.external_id == leadgen_id
    assert "HTTP 500" in (row.last_error or "")
    assert META_TOKEN not in (row.last_error or "")
    assert await _leads(ingest, source["id"]) == []

    platforms.release(graph_path)

    async def stored() -> list[dict[str, Any]]:
        return await _leads(ingest, source["id"])

    (lead,) = await wait_until_async(stored, timeout=20, what="the Meta lead after recovery")
    assert lead["external_id"] == leadgen_id
    # The token went in the Authorization header on every call, never in the URL.
    for _path, query, headers in platforms.calls(graph_path):
        assert "access_token" not in query
        assert headers["authorization"] == f"Bearer {META_TOKEN}"
    assert lead["lead"]["email"] == email
    assert await _pending_fetches(ingest, source["id"]) == []

    # A redelivery after the lead is ours neither queues nor fetches it again.
    graph_calls = len(platforms.calls(graph_path))
    late = await ingest.client.post(source["webhook_url"], content=body, headers=_meta_headers(body))
    assert late.status_code == 200
    assert late.json()["queued"] == 0
    assert await _pending_fetches(ingest, source["id"]) == []
    assert len(await _leads(ingest, source["id"])) == 1
    assert len(platforms.calls(graph_path)) == graph_calls

    events = [e for e in await _received_events(ingest, kafka_bootstrap) if e.data["external_id"] == leadgen_id]
    assert len(events) == 1
    assert events[0].data["lead_id"] == lead["lead_id"]
    assert events[0].data["source"]["kind"] == "meta"
    assert events[0].data["is_test"] is False


async def test_meta_lead_fetch_keeps_retrying_until_the_access_token_is_fixed(
    ingest: Ingest, platforms: FakePlatforms
) -> None:
    source = await _create_source(
        ingest,
        "meta",
        {
            "app_secret": META_APP_SECRET,
            "verify_token": "vt",
            "access_token": "expired-token",
            "graph_base_url": platforms.url,
        },
    )
    leadgen_id = str(uuid.uuid4().int)[:15]
    platforms.meta_leads[leadgen_id] = _graph_lead(leadgen_id, _email())
    body = _meta_notification(leadgen_id)
    assert (
        await ingest.client.post(source["webhook_url"], content=body, headers=_meta_headers(body))
    ).status_code == 200

    async def refused() -> PlatformFetch | None:
        rows = await _pending_fetches(ingest, source["id"])
        return rows[0] if rows and rows[0].attempts >= 1 else None

    row = await wait_until_async(refused, timeout=20, what="a refused Graph API call")
    assert "HTTP 400" in (row.last_error or "") and "190" in (row.last_error or "")
    assert "expired-token" not in (row.last_error or "")

    patched = await ingest.client.patch(
        f"/v1/sources/{source['id']}", json={"config": {"access_token": META_TOKEN}}, headers=ADMIN
    )
    assert patched.status_code == 200

    async def stored() -> list[dict[str, Any]]:
        return await _leads(ingest, source["id"])

    (lead,) = await wait_until_async(stored, timeout=20, what="the lead once the token works")
    assert lead["external_id"] == leadgen_id


# -- LinkedIn: notification -> leadFormResponses + leadForms, then deletion --------------------------------


async def test_linkedin_lead_is_fetched_with_its_form_after_a_timeout_and_erased_on_delete(
    ingest: Ingest, platforms: FakePlatforms
) -> None:
    secret = "li-secret-" + uuid.uuid4().hex
    source = await _create_source(
        ingest,
        "linkedin",
        {"client_secret": secret, "access_token": LINKEDIN_TOKEN, "api_base_url": f"{platforms.url}/rest"},
    )
    response_id = f"{uuid.uuid4()}-4"
    email = _email()
    platforms.linkedin_responses[response_id] = _linkedin_response(response_id, email)
    platforms.linkedin_forms["7001"] = LINKEDIN_FORM
    response_path = f"/rest/leadFormResponses/{response_id}"
    platforms.fail(response_path, "timeout")
    body = _linkedin_notification(response_id)

    answer = await ingest.client.post(source["webhook_url"], content=body, headers=_linkedin_headers(body, secret))
    assert answer.status_code == 200, answer.text
    assert answer.json()["queued"] == 1

    async def stored() -> list[dict[str, Any]]:
        return await _leads(ingest, source["id"])

    (lead,) = await wait_until_async(stored, timeout=20, what="the LinkedIn lead after a timed-out fetch")
    assert len(platforms.calls(response_path)) >= 2  # the first attempt timed out
    assert lead["external_id"] == f"urn:li:leadGenFormResponse:{response_id}"
    assert lead["lead"]["email"] == email
    assert lead["lead"]["first_name"] == "Katherine"
    assert lead["is_test"] is False

    deleted = _linkedin_notification(response_id, action="DELETED")
    gone = await ingest.client.post(source["webhook_url"], content=deleted, headers=_linkedin_headers(deleted, secret))
    assert gone.status_code == 200
    assert gone.json()["erased"] == 1
    after = (await ingest.client.get(f"/v1/leads/{lead['lead_id']}", headers=ADMIN)).json()
    assert after["erased_at"] is not None
    assert after["lead"] is None


# -- leads that arrive whole -------------------------------------------------------------------------------


async def test_google_lead_is_stored_and_a_redelivery_is_a_duplicate(ingest: Ingest) -> None:
    source = await _create_source(ingest, "google_ads", {"google_key": "g-key-0123"})
    lead_id = f"lead-{uuid.uuid4().hex}"
    email = _email()
    body = _dumps(_google_payload(lead_id, email, "g-key-0123"))

    first = await ingest.client.post(source["webhook_url"], content=body, headers={"Content-Type": "application/json"})
    again = await ingest.client.post(source["webhook_url"], content=body, headers={"Content-Type": "application/json"})

    assert first.status_code == 200 and again.status_code == 200
    assert [item["status"] for item in first.json()["leads"]] == ["accepted"]
    assert [item["status"] for item in again.json()["leads"]] == ["duplicate"]
    (lead,) = await _leads(ingest, source["id"])
    assert lead["external_id"] == lead_id
    assert lead["lead"]["email"] == email
    assert lead["is_test"] is False


async def test_google_test_lead_is_kept_apart_in_the_store_and_the_event(ingest: Ingest, kafka_bootstrap: str) -> None:
    source = await _create_source(ingest, "google_ads", {"google_key": "g-key-test"})
    lead_id = f"TeSter-{uuid.uuid4().hex}"
    body = _dumps(_google_payload(lead_id, _email(), "g-key-test", is_test=True))

    response = await ingest.client.post(
        source["webhook_url"], content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 200, response.text
    (lead,) = await _leads(ingest, source["id"])
    assert lead["is_test"] is True
    events = [e for e in await _received_events(ingest, kafka_bootstrap) if e.data["lead_id"] == lead["lead_id"]]
    assert len(events) == 1
    assert events[0].data["is_test"] is True
    assert events[0].data["external_id"] == lead_id


async def test_typeform_lead_is_stored_by_event_id(ingest: Ingest) -> None:
    source = await _create_source(ingest, "typeform", {"secret": "tf-secret-1"})
    event_id = uuid.uuid4().hex.upper()
    email = _email()
    body = _dumps(_typeform_payload(event_id, email))

    for _ in range(2):  # Typeform retries on timeouts; the second delivery is the same lead
        response = await ingest.client.post(
            source["webhook_url"], content=body, headers=_typeform_headers(body, "tf-secret-1")
        )
        assert response.status_code == 200, response.text

    (lead,) = await _leads(ingest, source["id"])
    assert lead["external_id"] == event_id
    assert lead["lead"]["email"] == email
    assert lead["lead"]["first_name"] == "Margaret"


async def test_a_200_kib_typeform_response_is_accepted_past_the_web_lead_limit(ingest: Ingest) -> None:
    source = await _create_source(ingest, "typeform", {"secret": "tf-secret-big"})
    event_id = uuid.uuid4().hex.upper()
    payload = _typeform_payload(event_id, _email())
    # A long form: Typeform sends the whole definition with the answers, every question's title included.
    payload["form_response"]["definition"] = {
        "id": "lT4Z3j",
        "title": "Long application",
        "fields": [
            {"id": f"q{i}", "ref": f"q{i}", "type": "long_text", "title": f"Question {i}: " + "x" * 1000}
            for i in range(200)
        ],
    }
    body = _dumps(payload)
    assert 200 * 1024 <= len(body) < 1024 * 1024 and len(body) > ingest.settings.max_body_bytes

    response = await ingest.client.post(
        source["webhook_url"], content=body, headers=_typeform_headers(body, "tf-secret-big")
    )

    assert response.status_code == 200, response.text
    (lead,) = await _leads(ingest, source["id"])
    assert lead["external_id"] == event_id


async def test_platform_bodies_over_their_kinds_limit_are_refused_413_while_streaming(ingest: Ingest) -> None:
    typeform = await _create_source(ingest, "typeform", {"secret": "tf-secret-huge"})
    linkedin = await _create_source(ingest, "linkedin", {"client_secret": "li-secret-huge"})
    chunk = b'"' + b"x" * (8 * 1024 - 2) + b'",'
    for source, limit in ((typeform, 1024 * 1024), (linkedin, 64 * 1024)):
        sent = 0

        async def stream(chunks: int) -> AsyncIterator[bytes]:
            nonlocal sent
            yield b'{"padding": ['
            for _ in range(chunks):
                sent += len(chunk)
                yield chunk
            yield b'""]}'

        # Four times the limit, and never a Content-Length: only counting while it streams can stop it.
        response = await ingest.client.post(
            source["webhook_url"], content=stream(4 * limit // len(chunk)), headers={"Content-Type": "application/json"}
        )

        assert response.status_code == 413, response.text
        assert response.json() == {"error": "payload_too_large", "detail": f"the body is larger than {limit} bytes"}
        assert sent < 2 * limit  # refused as it streamed, not after reading it all
        assert await _leads(ingest, source["id"]) == []


async def test_webflow_lead_is_stored_by_submission_id(ingest: Ingest) -> None:
    source = await _create_source(ingest, "webflow", {"secret": "wf-secret-1"})
    submission_id = uuid.uuid4().hex[:24]
    email = _email()
    body = _dumps(_webflow_payload(submission_id, email))

    response = await ingest.client.post(
        source["webhook_url"], content=body, headers=_webflow_headers(body, "wf-secret-1")
    )

    assert response.status_code == 200, response.text
    (lead,) = await _leads(ingest, source["id"])
    assert lead["external_id"] == submission_id
    assert lead["lead"]["email"] == email


async def test_hubspot_contact_event_fetches_the_contact(ingest: Ingest, platforms: FakePlatforms) -> None:
    source = await _create_source(
        ingest,
        "hubspot",
        {"client_secret": "hs-secret-1", "access_token": HUBSPOT_TOKEN, "api_base_url": platforms.url},
    )
    contact_id = int(uuid.uuid4().int % 10**9)
    email = _email()
    platforms.hubspot_contacts[str(contact_id)] = _hubspot_contact(contact_id, email)
    platforms.fail(f"/crm/v3/objects/contacts/{contact_id}", "500")
    body = _dumps(_hubspot_events(contact_id))

    response = await ingest.client.post(
        source["webhook_url"],
        content=body,
        headers=_hubspot_headers(body, "hs-secret-1", source["webhook_url"]),
    )
    assert response.status_code == 200, response.text
    assert response.json()["queued"] == 1

    async def stored() -> list[dict[str, Any]]:
        return await _leads(ingest, source["id"])

    (lead,) = await wait_until_async(stored, timeout=20, what="the HubSpot contact after one failure")
    assert lead["external_id"] == str(contact_id)
    assert lead["lead"]["email"] == email
    assert lead["lead"]["last_name"] == "Perlman"


# -- refusals: nothing is stored ---------------------------------------------------------------------------

STALE_MS = 10 * 60 * 1000


def _bad_request(kind: str, case: str, url: str) -> tuple[bytes, dict[str, str]]:
    """A request signed wrongly in one way, for a source of `kind` with the secret `secret-<kind>`."""
    secret = f"secret-{kind}"
    if kind == "google_ads":
        key = {"wrong": "not-the-key", "missing": None}[case]
        return _dumps(_google_payload(f"lead-{uuid.uuid4().hex}", _email(), key)), {}
    if kind == "meta":
        body = _meta_notification(str(uuid.uuid4().int)[:16])
        headers = _meta_headers(body, secret)
    elif kind == "linkedin":
        body = _linkedin_notification(str(uuid.uuid4()))
        headers = _linkedin_headers(body, secret)
    elif kind == "typeform":
        body = _dumps(_typeform_payload(uuid.uuid4().hex, _email()))
        headers = _typeform_headers(body, secret)
    elif kind == "webflow":
        body = _dumps(_webflow_payload(uuid.uuid4().hex[:24], _email()))
        ts = _now_ms() - STALE_MS if case == "stale" else None
        headers = _webflow_headers(body, secret, ts)
    else:
        body = _dumps(_hubspot_events(int(uuid.uuid4().int % 10**9)))
        ts = _now_ms() - STALE_MS if case == "stale" else None
        headers = _hubspot_headers(body, secret, url, ts)
    if case == "tampered":
        body = body.replace(b"@example.org", b"@evil.example") if b"@example.org" in body else body + b" "
    elif case == "missing":
        signature_headers = {
            "x-hub-signature-256",
            "x-li-signature",
            "typeform-signature",
            "x-webflow-signature",
        }
        headers = {k: v for k, v in headers.items() if k.lower() not in signature_headers | {"x-hubspot-signature-v3"}}
    return body, headers


REFUSALS = [
    ("meta", "tampered", "X-Hub-Signature-256"),
    ("meta", "missing", "X-Hub-Signature-256"),
    ("google_ads", "wrong", "google_key"),
    ("google_ads", "missing", "google_key"),
    ("linkedin", "tampered", "X-LI-Signature"),
    ("linkedin", "missing", "X-LI-Signature"),
    ("typeform", "tampered", "Typeform-Signature"),
    ("typeform", "missing", "Typeform-Signature"),
    ("webflow", "tampered", "x-webflow-signature"),
    ("webflow", "stale", "x-webflow-timestamp"),
    ("webflow", "missing", "x-webflow-signature"),
    ("hubspot", "tampered", "X-HubSpot-Signature-v3"),
    ("hubspot", "stale", "X-HubSpot-Request-Timestamp"),
    ("hubspot", "missing", "X-HubSpot-Signature-v3"),
]


@pytest.mark.parametrize(("kind", "case", "header"), REFUSALS, ids=[f"{k}-{c}" for k, c, _ in REFUSALS])
async def test_bad_signature_is_refused_with_401_naming_the_header_and_nothing_is_stored(
    ingest: Ingest, platforms: FakePlatforms, kind: str, case: str, header: str
) -> None:
    secret = f"secret-{kind}"
    config = {
        "meta": {
            "app_secret": secret,
            "verify_token": "vt",
            "access_token": META_TOKEN,
            "graph_base_url": platforms.url,
        },
        "google_ads": {"google_key": secret},
        "linkedin": {
            "client_secret": secret,
            "access_token": LINKEDIN_TOKEN,
            "api_base_url": f"{platforms.url}/rest",
        },
        "typeform": {"secret": secret},
        "webflow": {"secret": secret},
        "hubspot": {"client_secret": secret, "access_token": HUBSPOT_TOKEN, "api_base_url": platforms.url},
    }[kind]
    source = await _create_source(ingest, kind, config)
    requests_before = len(platforms.requests)
    body, headers = _bad_request(kind, case, source["webhook_url"])

    response = await ingest.client.post(source["webhook_url"], content=body, headers=headers)

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_signature"
    assert response.json()["header"] == header
    assert await _leads(ingest, source["id"]) == []
    assert await _pending_fetches(ingest, source["id"]) == []
    assert len(platforms.requests) == requests_before  # nothing was fetched on its behalf either


async def test_unknown_disabled_and_web_sources_have_no_webhook(ingest: Ingest) -> None:
    google = await _create_source(ingest, "google_ads", {"google_key": "g-key-off"})
    body = _dumps(_google_payload(f"lead-{uuid.uuid4().hex}", _email(), "g-key-off"))
    disable = await ingest.client.patch(f"/v1/sources/{google['id']}", json={"enabled": False}, headers=ADMIN)
    assert disable.status_code == 200
    web = await _create_source(ingest, "web", {})

    disabled = await ingest.client.post(google["webhook_url"], content=body)
    unknown = await ingest.client.post(f"/v1/sources/{uuid.uuid4()}/webhook", content=body)
    web_post = await ingest.client.post(f"/v1/sources/{web['id']}/webhook", content=body)

    assert (disabled.status_code, unknown.status_code, web_post.status_code) == (404, 404, 404)
    assert disabled.json() == unknown.json()  # a disabled source is indistinguishable from none
    assert await _leads(ingest, google["id"]) == []
