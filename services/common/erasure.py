"""What an erased lead's enrichment keeps: one rule for every service that stores enrichment (scoring, routing).

Two copies of this rule drifted apart once (one kept the company's name), so it lives here, written as what is
kept rather than what is dropped: a field added to enrichment later stays out of erased records until someone
decides it is anonymous.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

# Categories shared by many leads, which name neither a person nor a company. `partial` says the enrichment was
# incomplete: a fact about the pipeline, not the lead.
ANONYMOUS_FIELDS: tuple[str, ...] = (
    "email_type",
    "phone_country",
    "phone_line_type",
    "seniority",
    "function",
    "partial",
)
# The company's size, industry, country and revenue bands; never its name or domain.
ANONYMOUS_COMPANY_FIELDS: tuple[str, ...] = ("employee_band", "industry", "country", "revenue_band")


@overload
def anonymous_enrichment(enrichment: Mapping[str, Any]) -> dict[str, Any]: ...
@overload
def anonymous_enrichment(enrichment: None) -> None: ...
@overload
def anonymous_enrichment(enrichment: Mapping[str, Any] | None) -> dict[str, Any] | None: ...


def anonymous_enrichment(enrichment: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The enrichment record without what points at a person or a company.

    Kept: the email type, the phone's country and line type, seniority, function and the company's bands.
    Dropped: the email domain, the company's name and domain, the provider's answer, the steps log (its details
    name domains) and `match` (how the company was found). Keys absent from the record stay absent.
    """
    if enrichment is None:
        return None
    kept: dict[str, Any] = {key: enrichment[key] for key in ANONYMOUS_FIELDS if key in enrichment}
    company = enrichment.get("company")
    if isinstance(company, Mapping):
        kept["company"] = {key: company[key] for key in ANONYMOUS_COMPANY_FIELDS if key in company}
    elif "company" in enrichment:
        kept["company"] = None
    return kept
