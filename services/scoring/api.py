"""Scoring's HTTP API: rulesets, preview, scores and firmographics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from common.web import Admin
from scoring.domain import RulesetError, parse_firmographics_csv
from scoring.store import ScoringRepository

router = APIRouter()

_TEXT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/yaml": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}},
    }
}


def _error(status: int, code: str, detail: Any) -> HTTPException:
    return HTTPException(status_code=status, detail={"error": code, "detail": detail})


async def _text_body(request: Request) -> str:
    try:
        return (await request.body()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(400, "bad_request", "the body must be UTF-8 text") from exc


@router.get("/v1/ruleset", summary="The scoring ruleset in force")
async def get_ruleset(request: Request, _admin: Admin) -> dict[str, Any]:
    scoring = request.app.state.scoring
    async with request.app.state.runtime.db.read() as session:
        ruleset = await scoring.active_ruleset(session)
    return {"version": ruleset.version, "yaml": ruleset.source_text}


@router.put(
    "/v1/ruleset",
    summary="Validate and activate a new ruleset (YAML); leads scored from now on use it",
    openapi_extra=_TEXT_BODY,
    responses={422: {"description": "The ruleset is invalid; each error names its line. The old one stays."}},
)
async def put_ruleset(request: Request, _admin: Admin) -> dict[str, Any]:
    text = await _text_body(request)
    scoring = request.app.state.scoring
    try:
        async with request.app.state.runtime.db.transaction() as session:
            ruleset = await scoring.install_ruleset(session, text)
    except RulesetError as exc:
        raise _error(
            422,
            "invalid_ruleset",
            [{"line": line, "reason": reason} for line, reason in exc.errors],
        ) from exc
    return {"version": ruleset.version, "status": "active"}


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lead: dict[str, Any] = Field(description="A normalized lead, as in lead.received")
    source: dict[str, Any] = Field(default_factory=lambda: {"kind": "web"})
    is_test: bool = False
    duplicate_of: str | None = None
    ruleset_yaml: str | None = Field(default=None, description="Try a candidate ruleset instead of the active one")


@router.post("/v1/score/preview", summary="Score a lead without storing or emitting anything")
async def preview(body: PreviewIn, request: Request, _admin: Admin) -> dict[str, Any]:
    scoring = request.app.state.scoring
    async with request.app.state.runtime.db.read() as session:
        try:
            ruleset = scoring.parse_ruleset(body.ruleset_yaml) if body.ruleset_yaml else await scoring.active_ruleset(session)
        except RulesetError as exc:
            raise _error(422, "invalid_ruleset", [{"line": ln, "reason": r} for ln, r in exc.errors]) from exc
        outcome = await scoring.evaluate(
            session,
            lead_id=None,
            lead=body.lead,
            source=body.source,
            is_test=body.is_test,
            duplicate_of=body.duplicate_of,
            ruleset=ruleset,
        )
    return {"score": outcome.score, "enrichment": outcome.enrichment.to_dict(), "conversion": outcome.conversion}


@router.get("/v1/scores/{lead_id}", summary="A lead's score, with every rule that fired and the enrichment")
async def get_score(lead_id: str, request: Request, _admin: Admin) -> dict[str, Any]:
    async with request.app.state.runtime.db.read() as session:
        row = await ScoringRepository(session).scored(lead_id)
        if row is None:
            raise _error(404, "not_found", "no score for this lead (yet)")
        return {
            "lead_id": row.lead_id,
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
    openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def load_firmographics(request: Request, _admin: Admin) -> dict[str, Any]:
    text = await _text_body(request)
    try:
        rows = parse_firmographics_csv(text)
    except ValueError as exc:
        raise _error(422, "invalid_csv", str(exc)) from exc
    async with request.app.state.runtime.db.transaction() as session:
        count = await request.app.state.scoring.load_firmographics(session, rows)
    return {"loaded": count}
