"""Every lead platform, one line each: adding a platform is its module plus a line here."""

from __future__ import annotations

from ingest.domain.sources import google_ads, hubspot, linkedin, meta, typeform, web, webflow
from ingest.domain.sources.platform import Platform

PLATFORMS: dict[str, Platform] = {
    platform.kind: platform
    for platform in (
        web.PLATFORM,
        meta.PLATFORM,
        google_ads.PLATFORM,
        linkedin.PLATFORM,
        typeform.PLATFORM,
        webflow.PLATFORM,
        hubspot.PLATFORM,
    )
}
SOURCE_KINDS: tuple[str, ...] = tuple(PLATFORMS)
WEBHOOK_KINDS = frozenset(kind for kind, platform in PLATFORMS.items() if platform.has_webhook)
SECRET_CONFIG_KEYS = frozenset(key for platform in PLATFORMS.values() for key in platform.secret_keys)
URL_CONFIG_KEYS = frozenset(key for platform in PLATFORMS.values() for key in platform.url_keys)
# The streaming body limit lets webhook requests run up to the largest; the route then holds each to its kind's.
WEBHOOK_MAX_BODY_BYTES = max(p.body_limit for p in PLATFORMS.values() if p.body_limit is not None)


def platform(kind: str) -> Platform:
    """The platform of a source's kind (kinds are checked when a source is saved)."""
    return PLATFORMS[kind]
