"""Scoring's HTTP API: rulesets, preview, scores and firmographics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from common.web import Admin, HandoffRoute
from scoring.domain import FirmographicsError, RulesetError, parse_firmographics_csv
from scoring.store import ScoringRepository

router = APIRouter(route_class=HandoffRoute)

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


def _error(status: int, code: str, detail: Any) -> HTTPException:
    return HTTPException(status_code=status, detail={"error": code, "detail": detail})


def _line_errors(errors: list[tuple[int | None, str]]) -> list[dict[str, Any]]:
    return [{"line": line, "reason": reason} for line, reason in errors]


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(400, "bad_request", "the body must be UTF-8 text") from exc


async def _text_body(request: Request) -> str:
    return _decode(await request.body())


async def _csv_body(request: Request) -> str:
    """The CSV as the raw body, or as the `file` field of a form upload (curl -F file=@companies.csv)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _text_body(request)
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise _error(422, "validation_failed", [{"field": "file", "reason": "a CSV file is required"}])
    return _decode(await upload.read())


@router.get("/v1/ruleset", summary="The scoring ruleset in force")
async def get_ruleset(request: Request, _admin: Admin) -> dict[str, Any]:
    scoring = request.app.state.scoring
    async with request.app.state.runtime.db.read() as session:
        ruleset = await scoring.active_ruleset(session)
    return {"version": ruleset.version, "name": ruleset.name, "yaml": ruleset.source_text}


@router.put(
    "/v1/ruleset",
    summary="Validate and activate a new ruleset (YAML); leads scored from now on use it",
    openapi_extra=_RULESET_BODY,
    responses={422: {"description": "The ruleset is invalid; each error names its line. The old one stays."}},
)
async def put_ruleset(request: Request, _admin: Admin) -> dict[str, Any]:
    text = await _text_body(request)
    scoring = request.app.state.scoring
    try:
        async with request.app.state.runtime.db.transaction() as session:
            ruleset = await scoring.install_ruleset(session, text)
    except RulesetError as exc:
        raise _error(422, "invalid_ruleset", _line_errors(exc.errors)) from exc
    return {"version": ruleset.version, "status": "active"}


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
async def preview(body: PreviewIn, request: Request, _admin: Admin) -> dict[str, Any]:
    scoring = request.app.state.scoring
    async with request.app.state.runtime.db.read() as session:
        try:
            if body.ruleset_yaml:
                ruleset = scoring.parse_ruleset(body.ruleset_yaml)
            else:
                ruleset = await scoring.active_ruleset(session)
        except RulesetError as exc:
            raise _error(422, "invalid_ruleset", _line_errors(exc.errors)) from exc
        outcome = await scoring.evaluate(
            session,
            lead_id=None,
            lead=body.lead,
            source=body.source,
            is_test=body.is_test,
            duplicate_of=body.duplicate_of,
            ruleset=ruleset,
        )
    return {
        "score": outcome.score,
        "enrichment": outcome.enrichment.to_dict(),
        "conversion": outcome.conversion,
    }


@router.get("/v1/scores/{lead_id}", summary="A lead's score, with every rule that fired and the enrichment")
async def get_score(lead_id: str, request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        row = await ScoringRepository(session).scored(lead_id)
        if row is None:
            raise _error(404, "not_found", "no score for this lead (yet)")
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
async def load_firmographics(request: Request, _admin: Admin) -> dict[str, Any]:
    text = await _csv_body(request)
    try:
        rows = parse_firmographics_csv(text)
    except FirmographicsError as exc:
        raise _error(422, "invalid_csv", _line_errors(exc.errors)) from exc
    async with request.app.state.runtime.db.transaction() as session:
        count = await request.app.state.scoring.load_firmographics(session, rows)
    return {"loaded": count}
