"""The Meta Graph client against an httpx.MockTransport: the token in the Authorization header, never the URL."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx
import pytest

from ingest.clients import MetaGraphClient

pytestmark = pytest.mark.unit

TOKEN = "EAAG-page-access-token-0123456789"
APP_SECRET = "meta-app-secret-0123456789"


async def _fetch_with(app_secret: str) -> httpx.Request:
    seen: list[httpx.Request] = []

    def graph(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "42", "field_data": []})

    async with httpx.AsyncClient(transport=httpx.MockTransport(graph)) as http:
        client = MetaGraphClient(
            http, base_url="https://graph.example", version="v21.0", access_token=TOKEN, app_secret=app_secret
        )
        lead: dict[str, Any] = await client.lead("42")
    assert lead["id"] == "42"
    (request,) = seen
    return request


async def test_the_access_token_is_a_bearer_header_with_the_documented_appsecret_proof() -> None:
    request = await _fetch_with(APP_SECRET)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(request.url)
    assert "access_token" not in request.url.params
    # Meta: appsecret_proof = hex HMAC-SHA256 of the access token, keyed by the app secret.
    expected = hmac.new(APP_SECRET.encode(), TOKEN.encode(), hashlib.sha256).hexdigest()
    assert request.url.params["appsecret_proof"] == expected
    assert request.url.path == "/v21.0/42"


async def test_without_an_app_secret_no_proof_is_sent_and_the_token_still_stays_out_of_the_url() -> None:
    request = await _fetch_with("")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert "appsecret_proof" not in request.url.params
    assert TOKEN not in str(request.url)
