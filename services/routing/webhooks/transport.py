"""The one HTTP client a sender shares, and the capped read of what a receiver answers."""

from __future__ import annotations

import logging

import httpx

from common.egress import AddressPolicy, Resolver, guarded_transport, system_resolver
from routing.settings import RoutingSettings


def new_http_client(
    settings: RoutingSettings, policy: AddressPolicy, resolver: Resolver = system_resolver
) -> httpx.AsyncClient:
    """The one client a sender shares across deliveries: no redirects, no proxies from the environment."""
    # httpx logs every request's full URL at INFO; webhook URLs often carry a token (Slack's do), so keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    limits = httpx.Limits(max_connections=settings.webhook_concurrency * 2, max_keepalive_connections=32)
    return httpx.AsyncClient(
        transport=guarded_transport(policy, resolver, limits),
        timeout=httpx.Timeout(settings.webhook_timeout_s),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": settings.webhook_user_agent},
    )


async def read_capped(response: httpx.Response, cap: int) -> str | None:
    """At most `cap` bytes of the answer, as text (None when nothing is kept): a receiver cannot fill the log."""
    if cap <= 0:
        return None
    received = bytearray()
    async for chunk in response.aiter_raw():
        received += chunk[: cap - len(received)]
        if len(received) >= cap:
            break  # the rest is never read; the connection is closed instead of reused
    return received.decode("utf-8", "replace")
