"""Ingest's quarantine routes: list, count, release (with corrections) and dismiss submissions that were not leads."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import orjson
import structlog
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from common.web import Admin, HandoffRoute, Ops
from ingest import handlers
from ingest.api import (
    ADMIN_SECURITY,
    HONEYPOT_FIELDS,
    PUBLISHABLE_KEY_FIELD,
    _decode_cursor,
    _encode_cursor,
    _error,
    _errors,
    _now,
    form_fields,
)
from ingest.domain import LeadValidationError, NotALead, normalize_lead
from ingest.store import IngestRepository, QuarantinedSubmission

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


def _fields(row: QuarantinedSubmission) -> dict[str, Any] | None:
    """The stored body as fields, without the publishable key and honeypot fields; None once erased."""
    if row.body is None:
        return None
    try:
        if row.content_type == "application/x-www-form-urlencoded":
            fields = form_fields(row.body)
        else:
            parsed = orjson.loads(row.body)
            fields = parsed if isinstance(parsed, dict) else {}
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return {}
    for name in (PUBLISHABLE_KEY_FIELD, *HONEYPOT_FIELDS):
        fields.pop(name, None)
    return fields


@router.get(
    "/v1/quarantine",
    summary="Submissions kept because they were not leads, newest first, paginated",
    responses=_errors(401, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def list_quarantine(
    request: Request,
    _admin: Admin,
    source_id: Annotated[uuid.UUID | None, Query(description="Only this source's submissions")] = None,
    reason: Annotated[Reason | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=1000, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Quarantined submissions with their reason and body (personal data: admin only)."""
    before = _decode_cursor(cursor) if cursor else None
    async with request.app.state.runtime.db.read() as session:
        repo = IngestRepository(session)
        rows = await repo.quarantine_page(
            source_id=str(source_id) if source_id else None,
            reason=reason,
            status=status,
            before=before,
            limit=limit + 1,
        )
        page = rows[:limit]
        sources = await repo.sources_by_id(row.source_id for row in page if row.source_id)
        items = [handlers.quarantine_view(row, sources.get(row.source_id or ""), _fields(row)) for row in page]
    next_cursor = _encode_cursor(items[-1]["received_at"], items[-1]["id"]) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


@router.get(
    "/v1/quarantine/summary",
    summary="How many submissions were quarantined, per source and reason",
    responses=_errors(401, 503),
)
async def quarantine_summary(request: Request, _ops: Ops) -> dict[str, Any]:
    """Counts only (no personal data), so the read-only ops token may see them."""
    async with request.app.state.runtime.db.read() as session:
        repo = IngestRepository(session)
        counts = await repo.quarantine_counts()
        sources = await repo.sources_by_id(source_id for source_id, _, _, _ in counts if source_id)
    groups: dict[tuple[str | None, str], dict[str, Any]] = {}
    for source_id, reason, status, count in counts:
        source = sources.get(source_id or "")
        group = groups.setdefault(
            (source_id, reason),
            {
                "source": handlers.source_view(source) if source or source_id is None else {"id": source_id},
                "reason": reason,
                "pending": 0,
                "released": 0,
                "dismissed": 0,
            },
        )
        group[status] = group.get(status, 0) + count
    items = sorted(groups.values(), key=lambda g: (str(g["source"].get("name") or ""), g["reason"]))
    return {"items": items, "retention_days": request.app.state.settings.quarantine_retention_days}


@router.post(
    "/v1/quarantine/{quarantine_id}/release",
    summary="Store a quarantined submission as a lead, with optional field corrections (once)",
    responses={
        202: {"description": "Stored as a lead; lead.received follows"},
        200: {"description": "Released before: the same lead"},
        **_errors(400, 401, 404, 409, 413, 422, 503),
    },
    openapi_extra=ADMIN_SECURITY,
)
async def release(
    quarantine_id: QuarantineId, request: Request, _admin: Admin, body: ReleaseIn | None = None
) -> JSONResponse:
    """Normalize the submission with the corrections and store it through the normal path; twice gives one lead."""
    row_id = str(quarantine_id)
    corrections = body.fields if body else {}
    runtime = request.app.state.runtime
    now = _now(request)
    async with runtime.db.transaction() as session:
        repo = IngestRepository(session)
        row = await repo.quarantined(row_id)
        if row is None:
            raise _error(404, "not_found", "no quarantined submission with this id")
        if row.status == "dismissed":
            raise _error(409, "dismissed", "this submission was dismissed; it cannot be released")
        source = await repo.source(row.source_id) if row.source_id else None
        lead = None
        if row.status == "pending":
            fields = {**(_fields(row) or {}), **corrections}
            fields = {key: value for key, value in fields.items() if value is not None}
            try:
                lead = normalize_lead(
                    fields,
                    default_region=source.default_region if source else None,
                    field_mapping=source.field_mapping if source else None,
                    now=now,
                )
            except LeadValidationError as exc:
                problems = [{"field": e.field, "reason": e.reason} for e in exc.errors]
                code = "not_a_lead" if isinstance(exc, NotALead) else "validation_failed"
                raise _error(422, code, problems) from None
        try:
            released = await handlers.release_quarantined(
                session,
                request.app.state.settings,
                row,
                lead,
                now=now,
                correlation_id=request.scope.get("state", {}).get("correlation_id"),
            )
        except handlers.QuarantineDecided as exc:
            raise _error(409, exc.status, str(exc)) from None
    if released.replayed:
        return JSONResponse(released.body(), status_code=200, headers={"Idempotent-Replayed": "true"})
    log.info("quarantine_released", quarantine_id=row_id, lead_id=released.lead_id)
    return JSONResponse(released.body(), status_code=202)


@router.post(
    "/v1/quarantine/{quarantine_id}/dismiss",
    summary="Dismiss a quarantined submission: recorded, and its body erased",
    responses=_errors(400, 401, 404, 409, 413, 422, 503),
    openapi_extra=ADMIN_SECURITY,
)
async def dismiss(
    quarantine_id: QuarantineId, request: Request, _admin: Admin, body: DismissIn | None = None
) -> dict[str, Any]:
    """Keep the record (who sent what kind of thing, when, why dismissed) without the personal data."""
    row_id = str(quarantine_id)
    async with request.app.state.runtime.db.transaction() as session:
        status = await handlers.dismiss_quarantined(session, row_id, _now(request), body.note if body else None)
    if status == "purged":
        raise _error(404, "not_found", "no quarantined submission with this id")
    if status == "released":
        raise _error(409, "released", "this submission was released as a lead; erase the lead instead")
    log.info("quarantine_dismissed", quarantine_id=row_id)
    return {"id": row_id, "status": status}
