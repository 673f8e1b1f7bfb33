"""Who may take a lead now: every reason a rep is excluded, and the lead facts eligibility reads. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from routing.domain.geo import covers
from routing.domain.hours import is_working_time
from routing.domain.reps import Rep, RepLoad
from routing.domain.rules import RuleOptions, lookup

EXCLUSION_REASONS = (
    "left",
    "status:away",
    "out_of_office",
    "already_tried",
    "over_capacity:open",
    "over_capacity:daily",
    "language",
    "territory",
    "segment",
    "outside_hours",
)


@dataclass(frozen=True)
class Candidate:
    """One rep considered for a lead, and why not, if not."""

    rep_id: str
    eligible: bool
    excluded_because: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "rep_id": self.rep_id,
            "eligible": self.eligible,
            "excluded_because": list(self.excluded_because),
        }


def lead_language(view: Mapping[str, Any]) -> str | None:
    """The lead's primary language subtag ('pt' for 'pt-BR'), if known."""
    value = lookup(view, "lead.language")
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower().replace("_", "-").split("-")[0]


def account_domain(view: Mapping[str, Any]) -> str | None:
    """The company domain used to find an account owner: enrichment.domain, else the email's domain."""
    for path in ("enrichment.domain", "enrichment.company.domain", "lead.email"):
        value = lookup(view, path)
        if isinstance(value, str) and value.strip():
            domain = value.strip().lower().rpartition("@")[2]
            return domain.removeprefix("www.") or None
    return None


def check_rep(
    rep: Rep,
    *,
    view: Mapping[str, Any],
    load: RepLoad,
    options: RuleOptions,
    exclude: frozenset[str],
    now: datetime,
    fit: bool = True,
) -> Candidate:
    """Every reason `rep` cannot take this lead now; fit=False checks presence only."""
    if rep.status == "left":
        return Candidate(rep.id, False, ["left"])
    reasons: list[str] = []
    if rep.status == "away":
        reasons.append("status:away")
    if rep.is_out_of_office(now):
        reasons.append("out_of_office")
    if rep.id in exclude:
        reasons.append("already_tried")
    if fit:
        if rep.max_open is not None and load.open_leads >= rep.max_open:
            reasons.append("over_capacity:open")
        if rep.max_per_day is not None and load.assigned_today >= rep.max_per_day:
            reasons.append("over_capacity:daily")
        language = lead_language(view)
        if options.require_language and language and rep.languages and language not in rep.languages:
            reasons.append("language")
        country = lookup(view, "lead.country")
        region = lookup(view, "lead.region")
        # A lead with no known country is not held back by territories: a hot lead must not stall on
        # a missing form field. Reps without territories cover everywhere.
        if (
            options.require_territory
            and rep.territories
            and isinstance(country, str)
            and country.strip()
            and not covers(rep.territories, country, region if isinstance(region, str) else None)
        ):
            reasons.append("territory")
        if options.segment and rep.segments and options.segment not in rep.segments:
            reasons.append("segment")
    if not is_working_time(now, hours=rep.hours, tz=rep.timezone):
        reasons.append("outside_hours")
    return Candidate(rep.id, not reasons, reasons)
