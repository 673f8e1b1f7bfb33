"""HubSpot on loopback: the documented subset of the CRM v3 API Handoff uses, and HubSpot's signed webhooks.

API (each call needs `Authorization: Bearer <token>`, else 401 INVALID_AUTHENTICATION):
  POST /crm/v3/objects/contacts/batch/upsert   {"inputs": [{"idProperty": "email", "id": ..., "properties": {...}}]}
  POST /crm/v3/objects/contacts/search         filterGroups[].filters[] email EQ
  GET  /crm/v3/owners?limit=&after=            paged: {"results": [...], "paging": {"next": {"after": ...}}}
  GET  /crm/v3/objects/{calls|emails|meetings|notes|tasks}/{id}?properties=&associations=contacts
  GET  /crm/v3/properties/contacts/{name}      404 when missing
  POST /crm/v3/properties/contacts             create a property (409 when it exists)
`throttle(n, retry_after)` answers the next n calls 429 RATE_LIMITS with that Retry-After.

Webhooks: `record_call` stores a call associated with a contact and returns HubSpot's `object.creation` event for
it (objectTypeId 0-48), `record_property` changes a contact property and returns its `contact.propertyChange`;
`log_call`, `change_property` and `send_webhook` POST them signed with the app's client secret
(X-HubSpot-Signature-v3 over method + URL + body + X-HubSpot-Request-Timestamp).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from common.hubspot import SIGNATURE_HEADER, TIMESTAMP_HEADER, hubspot_v3_signature

# Some of the contact properties every HubSpot account has; others must be created before they are written.
DEFAULT_PROPERTIES = (
    "email", "firstname", "lastname", "company", "jobtitle", "phone", "hubspot_owner_id", "lifecyclestage",
    "hs_lead_status",
)  # fmt: skip
ENGAGEMENT_TYPE_IDS = {"calls": "0-48", "emails": "0-49", "meetings": "0-47", "notes": "0-46", "tasks": "0-27"}


@dataclass
class HubSpotServer:
    """One HubSpot account (portal) on loopback; `contacts`, `owners` and `engagements` are its records."""

    token: str = "pat-na1-test-token"
    client_secret: str = "hubspot-app-client-secret"
    portal_id: int = 62515
    port: int = 0
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {"id", "properties"}
    owners: list[dict[str, Any]] = field(default_factory=list)
    engagements: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # type -> id -> record
    properties: set[str] = field(default_factory=lambda: set(DEFAULT_PROPERTIES))
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status answered)
    webhook_answers: list[tuple[int, Any]] = field(default_factory=list)  # what Handoff answered each webhook
    _throttled: int = 0
    _retry_after: str = "1"
    _ids: Any = field(default_factory=lambda: itertools.count(1001))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_owner(self, email: str, first: str = "", last: str = "") -> str:
        owner_id = str(next(self._ids))
        self.owners.append(
            {"id": owner_id, "email": email, "firstName": first, "lastName": last, "userId": int(owner_id) + 5000,
             "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z", "archived": False}
        )  # fmt: skip
        return owner_id

    def throttle(self, calls: int, retry_after: str = "1") -> None:
        with self._lock:
            self._throttled, self._retry_after = calls, retry_after

    def contact_by_email(self, email: str) -> dict[str, Any] | None:
        with self._lock:
            return next((c for c in self.contacts.values() if c["properties"].get("email") == email.lower()), None)

    # -- the webhooks HubSpot sends -------------------------------------------------------------------------------

    def record_call(self, contact_id: str, owner_id: str | None, *, object_type: str = "calls") -> dict[str, Any]:
        """A call (or email, meeting, note, task) logged on the contact by `owner_id`; returns its webhook event."""
        engagement_id = str(next(self._ids))
        record = {
            "id": engagement_id,
            "properties": {
                "hs_timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "hubspot_owner_id": owner_id,
                "hs_object_id": engagement_id,
            },
            "contact_ids": [contact_id],
        }
        with self._lock:
            self.engagements.setdefault(object_type, {})[engagement_id] = record
        return self._event("object.creation", int(engagement_id), objectTypeId=ENGAGEMENT_TYPE_IDS[object_type])

    def record_property(self, contact_id: str, name: str, value: str) -> dict[str, Any]:
        """A contact property changed in HubSpot (e.g. lifecyclestage -> customer); returns its webhook event."""
        with self._lock:
            self.contacts[contact_id]["properties"][name] = value
        return self._event("contact.propertyChange", int(contact_id), propertyName=name, propertyValue=value)

    def log_call(self, target_url: str, contact_id: str, owner_id: str | None) -> int:
        """A call logged in HubSpot and its webhook sent to `target_url`; returns Handoff's status code."""
        return self.send_webhook(target_url, [self.record_call(contact_id, owner_id)])

    def change_property(self, target_url: str, contact_id: str, name: str, value: str) -> int:
        """A contact property changed in HubSpot and its webhook sent; returns Handoff's status code."""
        return self.send_webhook(target_url, [self.record_property(contact_id, name, value)])

    def signed_headers(
        self, url: str, body: bytes, *, secret: str | None = None, at_ms: int | None = None
    ) -> dict[str, str]:
        """The headers HubSpot sends with a webhook POST of `body` to `url`."""
        timestamp = str(at_ms if at_ms is not None else int(time.time() * 1000))
        signature = hubspot_v3_signature(secret or self.client_secret, "POST", url, body, timestamp)
        return {"content-type": "application/json", SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: timestamp}

    def _event(self, subscription_type: str, object_id: int, **extra: Any) -> dict[str, Any]:
        return {
            "eventId": next(self._ids),
            "subscriptionId": 4242,
            "portalId": self.portal_id,
            "appId": 777,
            "occurredAt": int(time.time() * 1000),
            "subscriptionType": subscription_type,
            "attemptNumber": 0,
            "objectId": object_id,
            "changeSource": "CRM",
            **extra,
        }

    def send_webhook(self, target_url: str, events: list[dict[str, Any]], *, secret: str | None = None) -> int:
        """POST the events as HubSpot does (signed v3); returns Handoff's status code."""
        body = json.dumps(events).encode()
        headers = self.signed_headers(target_url, body, secret=secret)
        request = urllib.request.Request(target_url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, answer = response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, json.loads(exc.read() or b"null")
        with self._lock:
            self.webhook_answers.append((status, answer))
        return status

    # -- the API -----------------------------------------------------------------------------------------------------

    def start(self) -> HubSpotServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                with server._lock:
                    server.requests.append((self.command, urlsplit(self.path).path, status))

            def _handle(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length) if length else b""
                if self.headers.get("authorization") != f"Bearer {server.token}":
                    self._answer(401, _error("Authentication credentials not found.", "INVALID_AUTHENTICATION"))
                    return
                with server._lock:
                    throttled = server._throttled > 0
                    if throttled:
                        server._throttled -= 1
                if throttled:
                    body = _error("You have reached your secondly limit.", "RATE_LIMITS")
                    self._answer(429, body, {"retry-after": server._retry_after})
                    return
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                status, body = server._route(self.command, parts.path, query, json.loads(raw) if raw else None)
                self._answer(status, body)

            do_GET = do_POST = do_PATCH = _handle

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        with self._lock:
            if method == "POST" and path == "/crm/v3/objects/contacts/batch/upsert":
                return self._upsert(body)
            if method == "POST" and path == "/crm/v3/objects/contacts/search":
                return self._search(body)
            if method == "GET" and path == "/crm/v3/owners":
                return self._owners(query)
            if path.startswith("/crm/v3/properties/contacts"):
                return self._properties(method, path, body)
            segments = path.strip("/").split("/")
            if method == "GET" and len(segments) == 5 and segments[:3] == ["crm", "v3", "objects"]:
                return self._engagement(segments[3], segments[4], query)
        return 404, _error(f"no route for {method} {path}", "OBJECT_NOT_FOUND")

    def _upsert(self, body: Any) -> tuple[int, Any]:
        results = []
        for item in body.get("inputs") or []:
            if item.get("idProperty") != "email" or not item.get("id"):
                return 400, _error("idProperty email and id are required", "VALIDATION_ERROR")
            unknown = [name for name in item.get("properties") or {} if name not in self.properties]
            if unknown:
                return 400, _error(f"Property values were not valid: {unknown} do not exist", "VALIDATION_ERROR")
            email = str(item["id"]).lower()
            found = next((c for c in self.contacts.values() if c["properties"].get("email") == email), None)
            new = found is None
            if found is None:
                contact_id = str(next(self._ids))
                found = self.contacts[contact_id] = {"id": contact_id, "properties": {"email": email}}
            found["properties"].update({k: str(v) for k, v in (item.get("properties") or {}).items()})
            results.append({"id": found["id"], "properties": dict(found["properties"]), "new": new})
        return 200, {"status": "COMPLETE", "results": results}

    def _search(self, body: Any) -> tuple[int, Any]:
        filters = [f for group in body.get("filterGroups") or [] for f in group.get("filters") or []]
        wanted = next((str(f["value"]).lower() for f in filters if f.get("propertyName") == "email"), None)
        found = [c for c in self.contacts.values() if c["properties"].get("email") == wanted]
        return 200, {"total": len(found), "results": found[: int(body.get("limit") or 10)]}

    def _owners(self, query: dict[str, str]) -> tuple[int, Any]:
        limit = min(int(query.get("limit", "100")), 500)
        start = int(query.get("after", "0"))
        page = self.owners[start : start + limit]
        answer: dict[str, Any] = {"results": page}
        if start + limit < len(self.owners):
            answer["paging"] = {"next": {"after": str(start + limit), "link": f"{self.url}/crm/v3/owners?after=1"}}
        return 200, answer

    def _properties(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        name = path.removeprefix("/crm/v3/properties/contacts").strip("/")
        if method == "GET" and name:
            return (200, {"name": name}) if name in self.properties else (404, _error("not found", "OBJECT_NOT_FOUND"))
        if method == "POST" and not name:
            if body.get("name") in self.properties:
                return 409, _error("Property already exists", "OBJECT_ALREADY_EXISTS")
            self.properties.add(body["name"])
            return 201, dict(body)
        return 404, _error("not found", "OBJECT_NOT_FOUND")

    def _engagement(self, object_type: str, object_id: str, query: dict[str, str]) -> tuple[int, Any]:
        record = self.engagements.get(object_type, {}).get(object_id)
        if record is None:
            return 404, _error("Object not found", "OBJECT_NOT_FOUND")
        answer: dict[str, Any] = {"id": object_id, "properties": dict(record["properties"]), "archived": False}
        if "contacts" in query.get("associations", ""):
            results = [{"id": cid, "type": f"{object_type[:-1]}_to_contact"} for cid in record["contact_ids"]]
            answer["associations"] = {"contacts": {"results": results}}
        return 200, answer


def _error(message: str, category: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "category": category, "correlationId": "loopback"}
