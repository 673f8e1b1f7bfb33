"""The shared outbound address policy (common.egress) as ingest's platform calls and routing's webhooks use it."""

from __future__ import annotations

import httpx
import pytest

from common.egress import AddressPolicy, UnsafeUrl, guarded_transport, vet_url
from ingest.clients import MetaGraphClient, PlatformAPIError
from ingest.settings import IngestSettings
from routing.settings import RoutingSettings
from routing.webhooks import webhook_address_policy

pytestmark = pytest.mark.unit

TOKEN = "t" * 40


def test_production_policies_accept_only_https_and_development_allows_loopback() -> None:
    ingest_prod = IngestSettings(env="production", admin_token=TOKEN).platform_address_policy
    routing_prod = webhook_address_policy(RoutingSettings(env="production", admin_token=TOKEN))
    assert ingest_prod.require_https and routing_prod.require_https
    assert not ingest_prod.allow_loopback
    dev = IngestSettings(env="development").platform_address_policy
    assert dev.allow_loopback and not dev.require_https
    assert not IngestSettings(env="test", admin_token=TOKEN).platform_address_policy.allow_loopback
    listed = IngestSettings(
        env="test", admin_token=TOKEN, platform_allow_loopback=True, platform_allow_private_hosts=("10.0.0.0/8",)
    ).platform_address_policy
    assert listed.allow_loopback and listed.allowed_networks


async def test_plain_http_is_refused_in_production_before_any_lookup() -> None:
    async def no_dns(host: str, port: int) -> list[str]:
        raise AssertionError("a refused scheme must not reach the resolver")

    policy = AddressPolicy(require_https=True)
    with pytest.raises(UnsafeUrl, match="only https"):
        await vet_url("http://graph.example.com", policy, no_dns)


async def test_the_platform_fetch_is_refused_at_connect_time_when_the_address_is_internal() -> None:
    # A base URL that passed when saved can point elsewhere later (DNS rebinding, a changed allow-list):
    # the fetcher's transport checks the very address it connects to, and no request leaves.
    async def rebound(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    async with httpx.AsyncClient(transport=guarded_transport(AddressPolicy(), rebound)) as http:
        client = MetaGraphClient(
            http, base_url="http://graph.example.com", version="v21.0", access_token="EAAG-token", app_secret="s"
        )
        with pytest.raises(PlatformAPIError, match=r"refused: graph\.example\.com resolves to a metadata address"):
            await client.lead("123")
    async with httpx.AsyncClient(transport=guarded_transport(AddressPolicy(require_https=True))) as http:
        client = MetaGraphClient(http, base_url="http://127.0.0.1:9", version="v21.0", access_token="EAAG-token")
        with pytest.raises(PlatformAPIError, match="only https"):
            await client.lead("123")
