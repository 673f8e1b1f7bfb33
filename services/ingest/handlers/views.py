"""How stored rows are shown: the same view in events, answers and lists."""

from __future__ import annotations

from typing import Any

from ingest.store import Lead, QuarantinedSubmission, Source


def source_view(source: Source | None) -> dict[str, Any]:
    """A source as events and answers name it; None is the admin token (the API itself)."""
    if source is None:
        return {"id": None, "kind": "api", "name": "admin API"}
    return {"id": source.id, "kind": source.kind, "name": source.name}


def lead_view(lead: Lead, source: Source | None) -> dict[str, Any]:
    """A stored lead as the admin API shows it; `lead` is None once erased."""
    return {
        "lead_id": lead.id,
        "source": source_view(source) if source or lead.source_id is None else {"id": lead.source_id},
        "external_id": lead.external_id,
        "is_test": lead.is_test,
        "duplicate_of": lead.duplicate_of,
        "received_at": lead.received_at.isoformat(),
        "erased_at": lead.erased_at.isoformat() if lead.erased_at else None,
        "lead": lead.data,
    }


def quarantine_view(row: QuarantinedSubmission, source: Source | None, fields: dict[str, Any] | None) -> dict[str, Any]:
    """A quarantined submission as the admin API shows it; `fields` is its parsed body (None once erased)."""
    return {
        "id": row.id,
        "source": source_view(source) if source or row.source_id is None else {"id": row.source_id},
        "reason": row.reason,
        "problems": list(row.problems or []),
        "status": row.status,
        "origin": row.origin,
        "content_type": row.content_type,
        "fields": fields,
        "lead_id": row.lead_id,
        "note": row.note,
        "received_at": row.received_at.isoformat(),
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
    }
