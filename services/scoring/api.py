"""Scoring's HTTP API: rulesets, preview, scores and firmographics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from common.session import ReadSession, Transaction
from common.web import Admin, HandoffRoute, Ops, problem
from scoring.domain import Firmographic, FirmographicsError, RulesetError, parse_firmographics_csv
from scoring.handlers import Scoring

router = APIRouter(route_class=HandoffRoute)


def _scoring(request: Request) -> Scoring:
    return request.app.state.scoring


ScoringCases = Annotated[Scoring, Depends(_scoring)]

_TEXT = {"schema": {"type": "string"}}
_RULESET_BODY = {"requestBody": {"required": True, "content": {"application/yaml": _TEXT, "text/plain": _TEXT}}}
_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": _TEXT,
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        },
    }
}


def _line_errors(errors: list[tuple[int | None, str]]) -> list[dict[str, Any]]:
    return [{"line": line, "reason": reason} for line, reason in errors]


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise problem(400, "bad_request", "the body must be UTF-8 text") from exc


async def _text_body(request: Request) -> str:
    return _decode(await request.body())


# Uploads are read (and a CSV parsed) by dependencies listed before the session: FastAPI resolves a route's
# dependencies in order, so a slow client never holds the transaction, and with it SQLite's single writer, open.
TextBody = Annotated[str, Depends(_text_body)]


async def _csv_body(request: Request) -> str:
    """The CSV as the raw body, or as the `file` field of a form upload (curl -F file=@companies.csv)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _text_body(request)
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise problem(422, "validation_failed", [{"field": "file", "reason": "a CSV file is required"}])
    return _decode(await upload.read())


async def _firmographics_rows(request: Request) -> list[Firmographic]:
    try:
        return parse_firmographics_csv(await _csv_body(request))
    except FirmographicsError as exc:
        raise problem(422, "invalid_csv", _line_errors(exc.errors)) from exc


FirmographicsUpload = Annotated[list[Firmographic], Depends(_firmographics_rows)]


@router.get("/v1/ruleset", summary="The scoring ruleset in force")
async def get_ruleset(_admin: Admin, scoring: ScoringCases, session: ReadSession) -> dict[str, Any]:
    ruleset = await scoring.active_ruleset(session)
    return {"version": ruleset.version, "name": ruleset.name, "yaml": ruleset.source_text}


@router.put(
    "/v1/ruleset",
    summary="Validate and activate a new ruleset (YAML); leads scored from now on use it",
    openapi_extra=_RULESET_BODY,
    responses={422: {"description": "The ruleset is invalid; each error names its line. The old one stays."}},
)
async def put_ruleset(_admin: Admin, text: TextBody, scoring: ScoringCases, session: Transaction) -> dict[str, Any]:
    try:
        ruleset = await scoring.install_ruleset(session, text)
    except RulesetError as exc:
        raise problem(422, "invalid_ruleset", _line_errors(exc.errors)) from exc
    return {"version": ruleset.version, "status": "active"}


@router.get("/v1/audit", summary="Changes to the scoring ruleset: who and when, newest first")
async def list_audit(
    _ops: Ops,
    scoring: ScoringCases,
    session: ReadSession,
    before: Annotated[int | None, Query(ge=1, description="Entries older than this id (next_before)")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    items = await scoring.audit_entries(session, before, limit)
    return {"items": items, "next_before": items[-1]["id"] if len(items) == limit else None}


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lead: dict[str, Any] = Field(description="A normalized lead, as in lead.received")
    source: dict[str, Any] = Field(default_factory=lambda: {"kind": "web"})
    is_test: bool = False
    duplicate_of: str | None = None
    ruleset_yaml: str | None = Field(default=None, description="Try a candidate ruleset instead of the active one")


@router.post(
    "/v1/score/preview",
    summary="Score a lead without storing or emitting anything",
    responses={422: {"description": "The candidate ruleset is invalid; each error names its line."}},
)
async def preview(body: PreviewIn, _admin: Admin, scoring: ScoringCases, session: ReadSession) -> dict[str, Any]:
    try:
        outcome = await scoring.preview(
            session,
            lead=body.lead,
            source=body.source,
            is_test=body.is_test,
            duplicate_of=body.duplicate_of,
            ruleset_yaml=body.ruleset_yaml,
        )
    except RulesetError as exc:
        raise problem(422, "invalid_ruleset", _line_errors(exc.errors)) from exc
    return {
        "score": outcome.score,
        "enrichment": outcome.enrichment.to_dict(),
        "conversion": outcome.conversion,
    }


@router.get("/v1/scores/{lead_id}", summary="A lead's score, with every rule that fired and the enrichment")
async def get_score(lead_id: str, _admin: Admin, scoring: ScoringCases, session: ReadSession) -> dict[str, Any]:
    row = await scoring.stored_score(session, lead_id)
    if row is None:
        raise problem(404, "not_found", "no score for this lead (yet)")
    return {
        "lead_id": row.lead_id,
        "lead": row.lead,
        "source_kind": row.source_kind,
        "is_test": row.is_test,
        "duplicate_of": row.duplicate_of,
        "score": row.score,
        "enrichment": row.enrichment,
        "conversion": row.conversion,
        "ruleset_version": row.ruleset_version,
        "scored_at": row.scored_at.isoformat(),
        "outcome": row.outcome,
        "erased": row.erased_at is not None,
    }


@router.post(
    "/v1/firmographics",
    summary="Load company facts from CSV (domain,name,employee_band,industry,country,revenue_band)",
    openapi_extra=_CSV_BODY,
    responses={422: {"description": "The CSV is invalid; each error names its line. Nothing was loaded."}},
)
async def load_firmographics(
    _admin: Admin, rows: FirmographicsUpload, scoring: ScoringCases, session: Transaction
) -> dict[str, Any]:
    return {"loaded": await scoring.load_firmographics(session, rows)}
