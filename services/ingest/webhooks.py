"""Platform webhooks (placeholder while the per-platform verification lands; replaced in this change set)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from common.runtime import Runtime
from ingest.settings import IngestSettings

router = APIRouter()


@router.post("/v1/sources/{source_id}/webhook", name="source_webhook", include_in_schema=False)
async def source_webhook(source_id: str) -> None:
    raise HTTPException(status_code=404, detail={"error": "not_found", "detail": "no such webhook"})


class PlatformFetcher:
    def __init__(self, settings: IngestSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
