"""Where webhooks may go: `common.egress` holds the policy (shared with ingest's platform calls); this is routing's
reading of its settings."""

from __future__ import annotations

from common.egress import AddressPolicy, Destination, parse_url
from routing.settings import RoutingSettings


def webhook_address_policy(settings: RoutingSettings) -> AddressPolicy:
    """Loopback as the settings say, the private allow-list, and https only in production."""
    return AddressPolicy.from_allow_list(
        allow_loopback=settings.webhook_loopback_allowed,
        allow_private_hosts=settings.webhook_allow_private_hosts,
        require_https=settings.env == "production",
    )


def parse_endpoint_url(url: str) -> Destination:
    """Only absolute http(s) URLs with a host and no credentials; raises UnsafeUrl otherwise."""
    return parse_url(url)
