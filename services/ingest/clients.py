"""Typed clients for the platform APIs a lead must be fetched from: Meta Graph, LinkedIn, HubSpot.

All share one `httpx.AsyncClient` owned by the fetcher. Access tokens travel only in the Authorization header,
never in a URL (URLs end up in proxy and server logs). Errors never carry a URL or a response body anyway, since
response bodies can hold the lead's personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from common.egress import UnsafeUrl
from ingest.domain import linkedin_is_test, linkedin_lead_to_raw, meta_lead_to_raw, parse_hubspot
from ingest.domain.sources.platform import FetchNeeds, Secret
from ingest.settings import IngestSettings

# The Lead fields `meta_lead_to_raw` reads; without `fields` the Graph API returns only the first three.
META_LEAD_FIELDS = "id,created_time,field_data,form_id,ad_id,adset_id,campaign_id,is_organic,platform"

# Contact properties asked for when a source names none (HubSpot returns only a handful by default).
HUBSPOT_CONTACT_PROPERTIES = (
    "email", "firstname", "lastname", "phone", "mobilephone", "company", "jobtitle", "website", "country",
    "state", "city", "zip", "address", "message", "hs_language", "lifecyclestage", "hs_lead_status",
    "hs_analytics_source", "hs_analytics_source_data_1", "hs_analytics_source_data_2",
)  # fmt: skip

_LINKEDIN_FORM_ID = re.compile(r"urn:li:leadGenForm:(\d+)")


class PlatformAPIError(Exception):
    """A platform API call failed: transport error, timeout, non-2xx or a body that is not a JSON object."""

    def __init__(self, platform: str, reason: str, *, status: int | None = None) -> None:
        self.platform = platform
        self.status = status
        super().__init__(f"{platform}: {reason}")


async def _get_json(
    http: httpx.AsyncClient,
    platform: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    try:
        response = await http.get(url, params=params, headers=headers)
    except httpx.TimeoutException as exc:
        # `from None`: httpx's message holds the URL, which can name the lead (Meta's leadgen id, HubSpot's contact).
        raise PlatformAPIError(platform, f"timed out ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise PlatformAPIError(platform, f"request failed ({type(exc).__name__})") from None
    except UnsafeUrl as exc:
        # The address policy refused the connection (an internal address, or plain http in production).
        raise PlatformAPIError(platform, f"refused: {exc}") from None
    if response.status_code != 200:
        raise PlatformAPIError(
            platform, f"HTTP {response.status_code}{_error_code(response)}", status=response.status_code
        )
    try:
        data = response.json()
    except ValueError:
        raise PlatformAPIError(platform, "the response is not JSON", status=200) from None
    if not isinstance(data, dict):
        raise PlatformAPIError(platform, "the response is not a JSON object", status=200)
    return data


def _error_code(response: httpx.Response) -> str:
    """The platform's own error code, when its error body has one (never the free-text message)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict) and error.get("code") is not None:  # Graph API: {"error": {"code": 190, ...}}
        return f" (error code {str(error['code'])[:16]})"
    for key in ("serviceErrorCode", "category"):  # LinkedIn, HubSpot
        if isinstance(body.get(key), str | int):
            return f" ({key} {str(body[key])[:32]})"
    return ""


def _path_segment(value: str) -> str:
    return quote(value, safe="")


def appsecret_proof(app_secret: str, access_token: str) -> str:
    """Meta's `appsecret_proof`: hex HMAC-SHA256 of the access token keyed by the app secret."""
    return hmac.new(app_secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


class MetaGraphClient:
    """Reads leads from the Graph API: `GET /<version>/<leadgen_id>` with the token as a Bearer header."""

    def __init__(
        self, http: httpx.AsyncClient, *, base_url: str, version: str, access_token: str, app_secret: str = ""
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._version = version
        self._access_token = access_token
        self._app_secret = app_secret

    async def lead(self, leadgen_id: str) -> dict[str, Any]:
        """The lead `{"id", "created_time", "field_data": [...], ...}`."""
        if not self._access_token:
            raise PlatformAPIError("meta", "the source has no access_token configured")
        params = {"fields": META_LEAD_FIELDS}
        if self._app_secret:
            # Apps with "Require App Secret" on refuse calls without appsecret_proof; others ignore it. The proof
            # is a query parameter as Meta documents; it proves the caller knows the secret and reveals neither.
            params["appsecret_proof"] = appsecret_proof(self._app_secret, self._access_token)
        url = f"{self._base_url}/{self._version}/{_path_segment(leadgen_id)}"
        headers = {"Authorization": f"Bearer {self._access_token}"}
        return await _get_json(self._http, "meta", url, params=params, headers=headers)


class FormCache:
    """Lead form definitions by versioned form URN; a form version never changes, so it is fetched once."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._forms: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, key: str) -> dict[str, Any] | None:
        form = self._forms.get(key)
        if form is not None:
            self._forms.move_to_end(key)
        return form

    def put(self, key: str, form: dict[str, Any]) -> None:
        self._forms[key] = form
        while len(self._forms) > self._size:
            self._forms.popitem(last=False)


class LinkedInClient:
    """Reads Lead Sync form responses and lead form definitions from LinkedIn's versioned REST API."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        version: str,
        access_token: str,
        forms: FormCache | None = None,
    ) -> None:
        self._http = http
        self._forms = forms or FormCache()
        self._base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {access_token}",
            "LinkedIn-Version": version,
            "X-Restli-Protocol-Version": "2.0.0",
        }
        self._has_token = bool(access_token)

    def _require_token(self) -> None:
        if not self._has_token:
            raise PlatformAPIError("linkedin", "the source has no access_token configured")

    async def form_response(self, urn: str) -> dict[str, Any]:
        """`GET /leadFormResponses/{id}` for a notification's `leadGenFormResponse` URN (or bare id)."""
        self._require_token()
        response_id = urn.rsplit(":", 1)[-1] if urn.startswith("urn:li:") else urn
        url = f"{self._base_url}/leadFormResponses/{_path_segment(response_id)}"
        return await _get_json(self._http, "linkedin", url, headers=self._headers)

    async def lead_form(self, form_urn: str) -> dict[str, Any] | None:
        """`GET /leadForms/{id}`: which answer is FIRST_NAME, EMAIL, ...; None when the URN has no form id."""
        self._require_token()
        match = _LINKEDIN_FORM_ID.search(form_urn)
        if match is None:
            return None
        key = f"{self._base_url}|{form_urn}"
        cached = self._forms.get(key)
        if cached is not None:
            return cached
        url = f"{self._base_url}/leadForms/{match.group(1)}"
        form = await _get_json(self._http, "linkedin", url, headers=self._headers)
        self._forms.put(key, form)
        return form


class HubSpotClient:
    """Reads contacts from HubSpot's CRM v3 API with a private-app or OAuth access token."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, access_token: str) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._access_token = access_token

    async def contact(self, contact_id: str, properties: Sequence[str] = HUBSPOT_CONTACT_PROPERTIES) -> dict[str, Any]:
        """`GET /crm/v3/objects/contacts/{id}?properties=...` -> `{"id", "properties": {...}, ...}`."""
        if not self._access_token:
            raise PlatformAPIError("hubspot", "the source has no access_token configured")
        url = f"{self._base_url}/crm/v3/objects/contacts/{_path_segment(contact_id)}"
        return await _get_json(
            self._http,
            "hubspot",
            url,
            params={"properties": ",".join(properties)},
            headers={"Authorization": f"Bearer {self._access_token}"},
        )


async def fetch_platform_lead(
    needs: FetchNeeds,
    http: httpx.AsyncClient,
    settings: IngestSettings,
    *,
    external_id: str,
    notification: Mapping[str, Any],
    config: Mapping[str, Any],
    base_url: str,
    secret: Secret,
    forms: FormCache,
) -> tuple[dict[str, Any], bool]:
    """A lead announced by id, fetched with the client its platform names: its raw fields, and whether a test.

    `base_url` is the source's own override ('' for the platform's default from the settings).
    """
    if needs.api == "meta":
        meta = MetaGraphClient(
            http,
            base_url=base_url or settings.meta_graph_base_url,
            version=settings.meta_graph_version,
            access_token=secret("access_token"),
            app_secret=secret("app_secret"),
        )
        return meta_lead_to_raw(await meta.lead(external_id)), False
    if needs.api == "linkedin":
        linkedin = LinkedInClient(
            http,
            base_url=base_url or settings.linkedin_api_base_url,
            version=settings.linkedin_api_version,
            access_token=secret("access_token"),
            forms=forms,
        )
        response = await linkedin.form_response(external_id)
        form_urn = response.get("versionedLeadGenFormUrn") or notification.get("form_urn")
        form = await linkedin.lead_form(str(form_urn)) if form_urn else None
        return linkedin_lead_to_raw(response, form=form), linkedin_is_test(response)
    if needs.api == "hubspot":
        hubspot = HubSpotClient(
            http, base_url=base_url or settings.hubspot_api_base_url, access_token=secret("access_token")
        )
        wanted = config.get("properties")
        properties = [str(p) for p in wanted] if isinstance(wanted, list) and wanted else HUBSPOT_CONTACT_PROPERTIES
        return parse_hubspot(await hubspot.contact(external_id, properties))[0].raw, False
    raise PlatformAPIError(needs.api, "no client for this platform's API")
