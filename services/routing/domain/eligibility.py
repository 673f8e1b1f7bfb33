"""Who may take a lead now: every reason a rep is excluded, and the lead facts eligibility reads. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, cast

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
    return _subtag(lookup(view, "lead.language"))


# A language value's primary subtag, by the value: leads carry a few dozen distinct ones.
_SUBTAGS: dict[str, str | None] = {}


def _subtag(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    found = _SUBTAGS.get(value, _UNSEEN)
    if found is _UNSEEN:
        found = value.strip().lower().replace("_", "-").split("-")[0] if value.strip() else None
        if len(_SUBTAGS) < 4096:
            _SUBTAGS[value] = found
    return cast("str | None", found)


_UNSEEN = object()


def account_domain(view: Mapping[str, Any]) -> str | None:
    """The company domain used to find an account owner: enrichment.domain, else the email's domain."""
    for path in ("enrichment.domain", "enrichment.company.domain", "lead.email"):
        value = lookup(view, path)
        if isinstance(value, str) and value.strip():
            domain = value.strip().lower().rpartition("@")[2]
            return domain.removeprefix("www.") or None
    return None


class LeadFacts(NamedTuple):
    """What eligibility reads of a lead, read once per lead instead of once per rep checked (a tuple: built for
    every lead routed, without a frozen dataclass's per-field set-up)."""

    language: str | None
    country: Any
    region: Any


def lead_facts(view: Mapping[str, Any]) -> LeadFacts:
    lead = view.get("lead") if type(view) is dict else None
    if type(lead) is dict:  # the view's own map: three look-ups, not three dotted-path walks
        return LeadFacts(_subtag(lead.get("language")), lead.get("country"), lead.get("region"))
    return LeadFacts(lead_language(view), lookup(view, "lead.country"), lookup(view, "lead.region"))


# A rep's presence at a moment (status away, out of office; working hours): the same for every lead decided at
# that moment, so a batch decided at one `now` works it out once per rep. Keyed by the rep's identity (the entry
# holds the rep, so the id is not reused while it is there) and the moment.
_PRESENCE: dict[tuple[int, datetime], tuple[Rep, tuple[str, ...], bool]] = {}


def _presence(rep: Rep, now: datetime) -> tuple[tuple[str, ...], bool]:
    """(the reasons that come before the fit checks, whether `now` is in the rep's working hours)."""
    key = (id(rep), now)
    hit = _PRESENCE.get(key)
    if hit is not None and hit[0] is rep:
        return hit[1], hit[2]
    before = (("status:away",) if rep.status == "away" else ()) + (
        ("out_of_office",) if rep.is_out_of_office(now) else ()
    )
    working = is_working_time(now, hours=rep.hours, tz=rep.timezone)
    if len(_PRESENCE) > 4096:
        _PRESENCE.clear()
    _PRESENCE[key] = (rep, before, working)
    return before, working


def is_available(rep: Rep, now: datetime) -> bool:
    """`rep.is_available(now)` from the presence worked out once per rep and moment."""
    return rep.status == "active" and "out_of_office" not in _presence(rep, now)[0]


def check_rep(
    rep: Rep,
    *,
    view: Mapping[str, Any],
    load: RepLoad,
    options: RuleOptions,
    exclude: frozenset[str],
    now: datetime,
    fit: bool = True,
    facts: LeadFacts | None = None,
) -> Candidate:
    """Every reason `rep` cannot take this lead now; fit=False checks presence only. `facts`: the lead's, read
    once by a caller that checks many reps (else read from the view)."""
    if rep.status == "left":
        return Candidate(rep.id, False, ["left"])
    before, working = _presence(rep, now)
    reasons = list(before)
    if rep.id in exclude:
        reasons.append("already_tried")
    if fit:
        if rep.max_open is not None and load.open_leads >= rep.max_open:
            reasons.append("over_capacity:open")
        if rep.max_per_day is not None and load.assigned_today >= rep.max_per_day:
            reasons.append("over_capacity:daily")
        if facts is None:
            facts = lead_facts(view)
        language, country, region = facts.language, facts.country, facts.region
        if options.require_language and language and rep.languages and language not in rep.languages:
            reasons.append("language")
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
    if not working:
        reasons.append("outside_hours")
    return Candidate(rep.id, not reasons, reasons)
