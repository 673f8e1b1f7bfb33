"""A small typed client for the part of Salesforce's REST API the connector uses.

OAuth 2.0 client credentials flow (`POST /services/oauth2/token`, grant_type=client_credentials, the connected
app's consumer key and secret in HTTP Basic) or JWT bearer flow (grant_type=urn:ietf:params:oauth:grant-type:
jwt-bearer, an RS256 assertion with iss = consumer key, sub = the integration user's username, aud = the login
host, exp within 3 minutes, signed with the key whose certificate the app holds); the answer's `instance_url` is
where every later call goes, with the access token as `Authorization: Bearer`. A call answered 401
INVALID_SESSION_ID gets a new token and is sent once more. Queries follow `nextRecordsUrl` until `done`. Errors
carry the status and Salesforce's `errorCode` only: Salesforce puts field values (an email, a name) into its
messages, and those must stay out of logs and /ops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from common.egress import UnsafeUrl
from routing.webhooks.retry import parse_retry_after

LIMIT_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "API_CURRENTLY_DISABLED", "SERVER_UNAVAILABLE"})
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_LIFETIME_S = 180  # Salesforce accepts an assertion whose exp is at most 3 minutes away


class SalesforceError(Exception):
    """A call that failed: `status` None for a network failure or timeout; never carries a record's values."""

    def __init__(
        self, reason: str, *, status: int | None = None, code: str = "", retry_after_s: float | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s
        super().__init__(reason)

    @property
    def transient(self) -> bool:
        """Worth trying again later: network trouble, limits, the org busy or down."""
        return self.status is None or self.status in TRANSIENT_STATUSES or self.code in LIMIT_CODES

    @property
    def rate_limited(self) -> bool:
        return self.status == 429 or self.code == "REQUEST_LIMIT_EXCEEDED"


@dataclass(frozen=True)
class Credentials:
    """A connected app's credentials and where to log in (login.salesforce.com or the org's My Domain): a client
    secret (client credentials flow), or a username and private key (JWT bearer flow)."""

    login_url: str
    client_id: str
    client_secret: str
    api_version: str = "60.0"
    username: str | None = None
    private_key: str | None = None  # PEM; when set, the JWT bearer flow is used
    audience: str = "https://login.salesforce.com"  # test.salesforce.com for a sandbox

    def token_request(self, now: datetime) -> dict[str, Any]:
        """The token call's form (and Basic auth for client credentials); SalesforceError if the key cannot sign."""
        if not self.private_key:
            return {"data": {"grant_type": "client_credentials"}, "auth": (self.client_id, self.client_secret)}
        claims = {
            "iss": self.client_id,
            "sub": self.username,
            "aud": self.audience,
            "exp": int(now.timestamp()) + JWT_LIFETIME_S,
        }
        import jwt  # here: PyJWT and cryptography cost ~0.1 s of every start-up, for a token now and then

        try:
            assertion = jwt.encode(claims, self.private_key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise SalesforceError(
                f"token: the private key cannot sign ({type(exc).__name__})", code="BAD_KEY"
            ) from None
        return {"data": {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}}


def soql_string(value: str) -> str:
    """A SOQL string literal: quotes and backslashes escaped (the value is the user's, never trusted)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def soql_datetime(value: datetime) -> str:
    """A SOQL dateTime literal in UTC, whole seconds (the format every API version accepts)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(text: str) -> datetime:
    """Salesforce's dateTime as REST returns it (2026-12-03T02:49:52.000+0000) as an aware datetime."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text).astimezone(UTC)


def _error_code(body: Any) -> str:
    """The first errorCode of Salesforce's `[{"message", "errorCode", "fields"}]` or OAuth's `{"error"}`."""
    if isinstance(body, list) and body and isinstance(body[0], Mapping):
        return str(body[0].get("errorCode") or "")
    if isinstance(body, Mapping):
        return str(body.get("error") or body.get("errorCode") or "")
    return ""


def _fields(body: Any) -> list[str]:
    if isinstance(body, list) and body and isinstance(body[0], Mapping):
        return [str(f) for f in body[0].get("fields") or []][:5]
    return []


class SalesforceClient:
    """One org's API over a shared `httpx.AsyncClient`; the token lives in memory and is fetched when needed."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        credentials: Credentials,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._http = http
        self.credentials = credentials
        self._clock = clock
        self._token: str | None = None
        self._instance_url: str | None = None
        self._auth_lock = asyncio.Lock()
        self.tokens_fetched = 0

    @property
    def data_path(self) -> str:
        return f"/services/data/v{self.credentials.api_version}"

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, url, **kwargs)
        except UnsafeUrl as exc:
            raise SalesforceError(f"refused: {exc}", code="REFUSED") from None
        except httpx.TimeoutException as exc:
            raise SalesforceError(f"timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            # `from None`: httpx's message holds the URL, which can hold a record's external id.
            raise SalesforceError(f"network error ({type(exc).__name__})") from None

    def _failure(self, response: httpx.Response, what: str) -> SalesforceError:
        try:
            body = response.json()
        except ValueError:
            body = None
        code = _error_code(body)
        fields = _fields(body)
        reason = f"{what}: HTTP {response.status_code}" + (f" {code}" if code else "")
        if fields:
            reason += f" (fields {', '.join(fields)})"
        retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
        return SalesforceError(reason, status=response.status_code, code=code, retry_after_s=retry_after)

    async def authenticate(self, *, stale: str | None = None) -> str:
        """A valid access token: the cached one, or a new one when there is none or `stale` was refused."""
        async with self._auth_lock:
            if self._token is not None and self._token != stale:
                return self._token
            login = self.credentials.login_url.rstrip("/")
            request = self.credentials.token_request(self._clock())
            response = await self._send("POST", f"{login}/services/oauth2/token", **request)
            if response.status_code != 200:
                raise self._failure(response, "token")
            try:
                answer = response.json()
                token, instance_url = str(answer["access_token"]), str(answer["instance_url"]).rstrip("/")
            except (ValueError, KeyError, TypeError):
                raise SalesforceError("token: answer without access_token and instance_url", status=200) from None
            self._token, self._instance_url = token, instance_url
            self.tokens_fetched += 1
            return token

    async def call(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None, what: str = ""
    ) -> tuple[int, Any]:
        """One API call on the instance (a path under it); a refused session is renewed once. Raises
        SalesforceError for anything but 2xx (and 300, which an upsert answers for several matches)."""
        token = await self.authenticate()
        for renewed in (False, True):
            assert self._instance_url is not None
            response = await self._send(
                method,
                self._instance_url + path,
                json=json,
                params=params,
                headers={"authorization": f"Bearer {token}", "accept": "application/json"},
            )
            if response.status_code == 401 and not renewed:
                token = await self.authenticate(stale=token)
                continue
            if response.status_code >= 400:
                raise self._failure(response, what or method)
            if not response.content:
                return response.status_code, None
            try:
                return response.status_code, response.json()
            except ValueError:
                raise SalesforceError(f"{what or method}: answer is not JSON", status=response.status_code) from None
        raise AssertionError("unreachable")

    async def query_pages(self, soql: str) -> AsyncIterator[list[dict[str, Any]]]:
        """The records of a SOQL query, a page at a time, following `nextRecordsUrl` until `done`."""
        _, page = await self.call("GET", f"{self.data_path}/query", params={"q": soql}, what="query")
        while True:
            if not isinstance(page, Mapping) or not isinstance(page.get("records"), list):
                raise SalesforceError("query: answer without records", status=200)
            yield [dict(r) for r in page["records"] if isinstance(r, Mapping)]
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not next_url:
                return
            if not str(next_url).startswith(self.data_path + "/query/"):
                raise SalesforceError("query: nextRecordsUrl outside the query resource", status=200)
            _, page = await self.call("GET", str(next_url), what="query more")

    async def query(self, soql: str) -> list[dict[str, Any]]:
        """Every record of a (small) query."""
        return [record async for page in self.query_pages(soql) for record in page]

    async def upsert(self, sobject: str, field: str, value: str, fields: Mapping[str, Any]) -> tuple[str, bool]:
        """Create or update the record whose external id `field` is `value`: (its Id, whether it was created)."""
        path = f"{self.data_path}/sobjects/{sobject}/{quote(field, safe='')}/{quote(value, safe='')}"
        status, answer = await self.call("PATCH", path, json=dict(fields), what=f"upsert {sobject}")
        if status == 300:
            raise SalesforceError(f"upsert {sobject}: several records match the external id", status=300)
        if not isinstance(answer, Mapping) or not answer.get("id"):
            raise SalesforceError(f"upsert {sobject}: answer without an id", status=status)
        return str(answer["id"]), status == 201 or bool(answer.get("created"))

    async def create(self, sobject: str, fields: Mapping[str, Any]) -> str:
        status, answer = await self.call(
            "POST", f"{self.data_path}/sobjects/{sobject}", json=dict(fields), what=f"create {sobject}"
        )
        if not isinstance(answer, Mapping) or not answer.get("id"):
            raise SalesforceError(f"create {sobject}: answer without an id", status=status)
        return str(answer["id"])

    async def update(self, sobject: str, record_id: str, fields: Mapping[str, Any]) -> None:
        path = f"{self.data_path}/sobjects/{sobject}/{quote(record_id, safe='')}"
        await self.call("PATCH", path, json=dict(fields), what=f"update {sobject}")
