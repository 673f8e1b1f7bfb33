"""Web forms and back ends: they post to /v1/leads with the source's keys, so no settings and no webhook."""

from __future__ import annotations

from ingest.domain.sources.platform import Platform

PLATFORM = Platform(kind="web")
