"""Ingest's quarantine routes: list, count, release (with corrections) and dismiss submissions that were not leads."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from common.session import ReadSession, Transaction
from common.web import Admin, HandoffRoute, Ops, problem
from ingest.api.shared import (
    ADMIN_SECURITY,
    correlation_id,
    decode_cursor,
    encode_cursor,
    error_responses,
    request_time,
)
from ingest.domain import LeadValidationError, NotALead
from ingest.handlers import quarantine as quarantine_cases

log = structlog.get_logger(__name__)
router = APIRouter(tags=["quarantine"], route_class=HandoffRoute)

Reason = Literal["no_contact", "origin_not_allowed", "honeypot"]
Status = Literal["pending", "released", "dismissed"]
QuarantineId = Annotated[uuid.UUID, Path(description="The quarantined submission's id")]
Correction = str | int | float | bool | None


class ReleaseIn(BaseModel):
    """Field corrections merged over the submission as it was sent; a null value removes that field."""

    model_config = ConfigDict(extra="forbid")

    fields: dict[Annotated[str, Field(min_length=1, max_length=200)], Correction] = Field(
        default_factory=dict, max_length=100
    )


class DismissIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=1000, description="Why it was dismissed (no personal data)")


@router.get(
    "/v1/quarantine",
    summary="Submissions kept because they were not leads, newest first, paginated",
    responses=error_responses(401, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def list_quarantine(
    session: ReadSession,
    _admin: Admin,
    source_id: Annotated[uuid.UUID | None, Query(description="Only this source's submissions")] = None,
    reason: Annotated[Reason | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=1000, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Quarantined submissions with their reason and body (personal data: admin only)."""
    before = decode_cursor(cursor) if cursor else None
    items, more = await quarantine_cases.quarantine_page(
        session,
        source_id=str(source_id) if source_id else None,
        reason=reason,
        status=status,
        before=before,
        limit=limit,
    )
    next_cursor = encode_cursor(items[-1]["received_at"], items[-1]["id"]) if more else None
    return {"items": items, "next_cursor": next_cursor}


@router.get(
    "/v1/quarantine/summary",
    summary="How many submissions were quarantined, per source and reason",
    responses=error_responses(401, 503),
)
async def quarantine_summary(request: Request, session: ReadSession, _ops: Ops) -> dict[str, Any]:
    """Counts only (no personal data), so the read-only ops token may see them."""
    items = await quarantine_cases.quarantine_summary(session)
    return {"items": items, "retention_days": request.app.state.settings.quarantine_retention_days}


@router.post(
    "/v1/quarantine/{quarantine_id}/release",
    summary="Store a quarantined submission as a lead, with optional field corrections (once)",
    responses={
        202: {"description": "Stored as a lead; lead.received follows"},
        200: {"description": "Released before: the same lead"},
        **error_responses(400, 401, 404, 409, 413, 422, 503),
    },
    openapi_extra=ADMIN_SECURITY,
)
async def release(
    quarantine_id: QuarantineId, request: Request, session: Transaction, _admin: Admin, body: ReleaseIn | None = None
) -> JSONResponse:
    """Normalize the submission with the corrections and store it through the normal path; twice gives one lead."""
    row_id = str(quarantine_id)
    try:
        released = await quarantine_cases.release(
            session,
            request.app.state.settings,
            row_id,
            body.fields if body else {},
            now=request_time(request),
            correlation_id=correlation_id(request),
        )
    except quarantine_cases.QuarantineNotFound:
        raise problem(404, "not_found", "no quarantined submission with this id") from None
    except quarantine_cases.QuarantineDecided as exc:
        raise problem(409, exc.status, str(exc)) from None
    except LeadValidationError as exc:
        problems = [{"field": e.field, "reason": e.reason} for e in exc.errors]
        code = "not_a_lead" if isinstance(exc, NotALead) else "validation_failed"
        raise problem(422, code, problems) from None
    if released.replayed:
        return JSONResponse(released.body(), status_code=200, headers={"Idempotent-Replayed": "true"})
    log.info("quarantine_released", quarantine_id=row_id, lead_id=released.lead_id)
    return JSONResponse(released.body(), status_code=202)


@router.post(
    "/v1/quarantine/{quarantine_id}/dismiss",
    summary="Dismiss a quarantined submission: recorded, and its body erased",
    responses=error_responses(400, 401, 404, 409, 413, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def dismiss(
    quarantine_id: QuarantineId, request: Request, session: Transaction, _admin: Admin, body: DismissIn | None = None
) -> dict[str, Any]:
    """Keep the record (who sent what kind of thing, when, why dismissed) without the personal data."""
    row_id = str(quarantine_id)
    status = await quarantine_cases.dismiss_quarantined(
        session, row_id, request_time(request), body.note if body else None
    )
    if status == "purged":
        raise problem(404, "not_found", "no quarantined submission with this id")
    if status == "released":
        raise problem(409, "released", "this submission was released as a lead; erase the lead instead")
    log.info("quarantine_dismissed", quarantine_id=row_id)
    return {"id": row_id, "status": status}
