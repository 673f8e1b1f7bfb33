"""The flags ingest puts on a lead (keep-and-flag, issue 11 item 1) reach scoring and routing rules as quality.flags."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.domain import normalize_lead
from routing.domain.rules import quality_view
from tests.unit.test_conditions import routes, scores

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)


def test_a_rule_on_quality_flags_fires_for_a_lead_whose_phone_could_not_be_read() -> None:
    flagged = normalize_lead({"email": "jane@example.com", "phone": "n/a"}, now=NOW).to_dict()
    clean = normalize_lead({"email": "jane@example.com", "phone": "+14155552671"}, now=NOW).to_dict()
    rule = "{quality.flags: {contains: phone_unparsed}}"
    assert scores(rule, flagged) and not scores(rule, clean)
    assert routes(rule, {"lead": flagged}) and not routes(rule, {"lead": clean})


def test_routing_keeps_the_flags_but_not_the_raw_values_the_person_typed() -> None:
    lead = normalize_lead({"email": "jane@example.com", "phone": "555 JANE PRIVATE"}, now=NOW).to_dict()
    assert lead["quality"]["raw"] == {"phone": "555 JANE PRIVATE"}
    assert quality_view({"lead": lead}) == {"flags": ["phone_unparsed"]}  # erasure empties the lead; nothing else
