"""A small typed client for the part of HubSpot's CRM v3 API Handoff uses, over one guarded httpx client.

Contacts are upserted by email (`POST /crm/v3/objects/contacts/batch/upsert`, `idProperty=email`), found by email
(`POST /crm/v3/objects/contacts/search`), owners listed with paging (`GET /crm/v3/owners`), engagements read with
their contact associations (`GET /crm/v3/objects/{calls|emails|meetings|notes|tasks}/{id}?associations=contacts`)
and Handoff's custom contact properties created when missing (`/crm/v3/properties/contacts`). Every call carries the
private app's token as a bearer token; a non-2xx answer raises HubSpotError with its status and Retry-After.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from common.logging import scrub_text
from routing.webhooks.retry import parse_retry_after

DEFAULT_BASE_URL = "https://api.hubapi.com"
# Engagement object types by HubSpot's object type id (webhooks send the id) and by name (paths use the name).
ENGAGEMENT_TYPES = {"0-48": "calls", "0-49": "emails", "0-47": "meetings", "0-46": "notes", "0-27": "tasks"}
PROPERTY_GROUP = "contactinformation"
# Handoff's context on the contact: created on setup when missing (all plain text, read-only in spirit).
HANDOFF_PROPERTIES = {
    "handoff_lead_id": "Handoff lead id",
    "handoff_grade": "Handoff grade",
    "handoff_reasons": "Handoff score reasons",
    "handoff_sla_due_at": "Handoff first touch due",
}


class HubSpotError(Exception):
    """HubSpot answered with an error (or not at all); `status` None means no answer."""

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class HubSpotClient:
    """One account's API, with its private-app token; the httpx client is the caller's (guarded, shared)."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, access_token: str) -> None:
        self._http = http
        self._base = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._token = access_token
        self.latency_s = 0.0  # of the calls made through this client so far

    async def _call(self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None) -> Any:
        if not self._token:
            raise HubSpotError("no private-app access token configured")
        started = time.perf_counter()
        try:
            response = await self._http.request(
                method,
                self._base + path,
                json=json,
                params=params,
                headers={"authorization": f"Bearer {self._token}", "accept": "application/json"},
            )
        except httpx.TimeoutException as exc:
            raise HubSpotError(f"no answer in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise HubSpotError(f"{type(exc).__name__}: {exc}"[:300]) from None
        finally:
            self.latency_s += time.perf_counter() - started
        if response.status_code == 404:
            return None
        if response.status_code >= 300:
            retry_after = parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
            raise HubSpotError(
                f"HTTP {response.status_code} from {method} {path.split('?')[0]}: {_message(response)}",
                status=response.status_code,
                retry_after_s=retry_after,
            )
        return response.json() if response.content else {}

    async def upsert_contact(self, email: str, properties: Mapping[str, str]) -> str:
        """Create or update the contact with this email; returns its id."""
        body = {"inputs": [{"idProperty": "email", "id": email, "properties": dict(properties)}]}
        answer = await self._call("POST", "/crm/v3/objects/contacts/batch/upsert", json=body)
        results = (answer or {}).get("results") or []
        if not results or not results[0].get("id"):
            raise HubSpotError("the upsert answered without a contact id")
        return str(results[0]["id"])

    async def contact_by_email(self, email: str, properties: Sequence[str] = ()) -> dict[str, Any] | None:
        """The contact with this email, or None."""
        body = {
            "filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}],
            "properties": ["email", "hubspot_owner_id", *properties],
            "limit": 1,
        }
        answer = await self._call("POST", "/crm/v3/objects/contacts/search", json=body)
        results = (answer or {}).get("results") or []
        return dict(results[0]) if results else None

    async def owners(self) -> list[dict[str, Any]]:
        """Every active owner of the account (id, email, names), following the `paging.next.after` cursor."""
        owners: list[dict[str, Any]] = []
        after: str | None = None
        for _page in range(1000):  # a bound, not a limit anyone reaches: 100,000 owners
            params = {"limit": "100", "archived": "false"}
            if after:
                params["after"] = after
            answer = await self._call("GET", "/crm/v3/owners", params=params) or {}
            owners.extend(dict(owner) for owner in answer.get("results") or [])
            after = ((answer.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                break
        return owners

    async def engagement(self, object_type: str, object_id: str) -> dict[str, Any] | None:
        """An engagement (`calls`, `emails`, ...) with its owner and time, and its contacts' ids (`contact_ids`)."""
        params = {"properties": "hubspot_owner_id,hs_timestamp", "associations": "contacts"}
        answer = await self._call("GET", f"/crm/v3/objects/{object_type}/{quote(object_id, safe='')}", params=params)
        if answer is None:
            return None
        contacts = ((answer.get("associations") or {}).get("contacts") or {}).get("results") or []
        return {**answer, "contact_ids": [str(c.get("id")) for c in contacts if c.get("id") is not None]}

    async def ensure_properties(self, names: Mapping[str, str] = HANDOFF_PROPERTIES) -> list[str]:
        """Create Handoff's contact properties that do not exist yet; returns the names created."""
        created: list[str] = []
        for name, label in names.items():
            if await self._call("GET", f"/crm/v3/properties/contacts/{name}") is not None:
                continue
            body = {
                "name": name,
                "label": label,
                "type": "string",
                "fieldType": "text",
                "groupName": PROPERTY_GROUP,
                "description": "Written by Handoff's lead router.",
            }
            try:
                await self._call("POST", "/crm/v3/properties/contacts", json=body)
            except HubSpotError as exc:
                if exc.status != 409:  # created meanwhile by someone else: what we wanted
                    raise
            created.append(name)
        return created


def _message(response: httpx.Response) -> str:
    """HubSpot's error message, short, emails and phones taken out (a validation error may quote a value)."""
    try:
        body = response.json()
    except ValueError:
        return scrub_text(response.text[:200])
    if isinstance(body, Mapping):
        return scrub_text(str(body.get("message") or body.get("category") or "")[:200])
    return ""
