"""`uvicorn bench.bare.app:create_app --factory`: the floor any FastAPI lead endpoint stands on."""

from __future__ import annotations

import uuid

import orjson
from fastapi import FastAPI
from fastapi.responses import Response

from ingest.api import LeadIn

# Built once: the same size as ingest's 202 body, so both sides write the same bytes per response.
_BODY = orjson.dumps(
    {
        "lead_id": str(uuid.uuid4()),
        "status": "accepted",
        "duplicate_of": None,
        "is_test": False,
        "correlation_id": uuid.uuid4().hex,
    }
)
ACCEPTED = Response(content=_BODY, status_code=202, media_type="application/json")


def create_app() -> FastAPI:
    """POST /v1/leads validates the body with `LeadIn` and answers the pre-built 202."""
    app = FastAPI(title="bare lead endpoint")

    @app.post("/v1/leads", status_code=202)
    async def post_lead(lead: LeadIn) -> Response:
        return ACCEPTED

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b"{}", media_type="application/json")

    return app
