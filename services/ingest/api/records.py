"""Reading leads (one, a page, one person's) and erasing them: one lead, or every lead of one person."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from common.db import as_utc
from common.session import ReadSession, Transaction
from common.web import Admin, HandoffRoute, problem
from ingest.api.shapes import ErasedOut, LeadOut, LeadPage
from ingest.api.shared import (
    ADMIN_SECURITY,
    correlation_id,
    decode_cursor,
    encode_cursor,
    error_responses,
    request_time,
)
from ingest.domain import LeadValidationError
from ingest.domain.lead import subject_identity_keys
from ingest.handlers import erasure, records

log = structlog.get_logger(__name__)
router = APIRouter(route_class=HandoffRoute)

LeadId = Annotated[uuid.UUID, Path(description="The lead_id returned when the lead was accepted")]


@router.get(
    "/v1/leads/{lead_id}",
    summary="A stored lead, normalized, with its source",
    response_model=LeadOut,
    responses=error_responses(401, 404, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def get_lead(lead_id: LeadId, session: ReadSession, _admin: Admin) -> dict[str, Any]:
    """The normalized lead and its source; `lead` is null once erased."""
    view = await records.lead_detail(session, str(lead_id))
    if view is None:
        raise problem(404, "not_found", "no lead with this id")
    return view


@router.get(
    "/v1/leads",
    summary="Leads, newest first, paginated",
    response_model=LeadPage,
    responses=error_responses(401, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def list_leads(
    session: ReadSession,
    _admin: Admin,
    source_id: Annotated[uuid.UUID | None, Query(description="Only this source's leads")] = None,
    since: Annotated[datetime | None, Query(description="Only leads received at or after this time")] = None,
    cursor: Annotated[str | None, Query(max_length=1000, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    email: Annotated[str | None, Query(max_length=320, description="Subject access: this person's leads")] = None,
    phone: Annotated[str | None, Query(max_length=64, description="Subject access: this person's leads")] = None,
    region: Annotated[str | None, Query(max_length=2, description="Country of a phone without +")] = None,
) -> dict[str, Any]:
    """Leads newest first; pass `next_cursor` back as `cursor` for the next page. With `email` or `phone`, every
    lead of that person (a subject-access request), matched on the normalized identity, in one page."""
    if email or phone:
        items = await records.subject_access(session, _subject_keys(email, phone, region))
        # The person is not logged: the request's id ties the answer to the caller's records.
        log.info("subject_access", leads=len(items))
        return {"items": items, "next_cursor": None}
    before = decode_cursor(cursor) if cursor else None
    try:
        # SQLite stores no offset: a given offset is converted, so it compares like PostgreSQL.
        since_utc = as_utc(since) if since else None
    except OverflowError:
        raise problem(422, "validation_failed", [{"field": "since", "reason": "out of range"}]) from None
    items, more = await records.lead_page(
        session, source_id=str(source_id) if source_id else None, since=since_utc, before=before, limit=limit
    )
    next_cursor = encode_cursor(items[-1]["received_at"], items[-1]["lead_id"]) if more else None
    return {"items": items, "next_cursor": next_cursor}


def _subject_keys(email: str | None, phone: str | None, region: str | None) -> list[str]:
    try:
        return subject_identity_keys(email, phone, region.upper() if region else None)
    except LeadValidationError as exc:
        detail = [{"field": e.field, "reason": e.reason} for e in exc.errors]
        raise problem(422, "validation_failed", detail) from None


class SubjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=64)
    region: str | None = Field(None, min_length=2, max_length=2, description="Country of a phone without +")


class SubjectErasedOut(BaseModel):
    erased: list[str] = Field(description="The ids of the leads erased now (each gets its own lead.erased)")
    count: int


@router.post(
    "/v1/subjects/erase",
    status_code=202,
    summary="Erase every lead of one person (by email or phone), here and through lead.erased everywhere",
    response_model=SubjectErasedOut,
    responses=error_responses(400, 401, 413, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def erase_subject(body: SubjectIn, request: Request, session: Transaction, _admin: Admin) -> dict[str, Any]:
    """Each of the person's leads goes through the normal erasure; calling again finds nothing more to erase."""
    keys = _subject_keys(body.email, body.phone, body.region)
    erased = await erasure.erase_subject(
        session,
        request.app.state.settings,
        keys,
        request_time(request),
        correlation_id(request),
        mentions=[value for value in (body.email, body.phone) if value],
    )
    log.info("subject_erased", leads=len(erased), lead_ids=erased[:50])
    return {"erased": erased, "count": len(erased)}


@router.delete(
    "/v1/leads/{lead_id}",
    status_code=202,
    summary="Erase a lead's personal data here, and (through lead.erased) in the other services",
    response_model=ErasedOut,
    responses=error_responses(401, 404, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def delete_lead(lead_id: LeadId, request: Request, session: Transaction, _admin: Admin) -> dict[str, Any]:
    """Erase the personal data and emit lead.erased; erasing again changes nothing."""
    settings = request.app.state.settings
    now, cid = request_time(request), correlation_id(request)
    lead = await erasure.erase_lead_by_id(session, settings, str(lead_id), now, cid)
    if lead is None:
        raise problem(404, "not_found", "no lead with this id")
    log.info("lead_erased", lead_id=lead.id)
    return {"lead_id": lead.id, "status": "erased"}
