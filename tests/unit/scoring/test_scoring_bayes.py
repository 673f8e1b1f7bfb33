"""Naive-Bayes conversion probability: arithmetic checked by hand, factors, insufficient data, features."""

from __future__ import annotations

import math

import pytest

from scoring.domain import (
    OUTCOME_FEATURES,
    Firmographic,
    OutcomeCounts,
    conversion_probability,
    enrich,
    outcome_features,
)

pytestmark = pytest.mark.unit

# Ten outcomes, 4 won and 6 lost:
#
#   field                  value       won  lost
#   enrichment.email_type  corporate    3     1
#   enrichment.email_type  free         1     5
#   lead.country           DE           2     2
#   lead.country           US           2     4
#
# With alpha = 1 and two values per field (V = 2), for a corporate lead from the US:
#   prior odds         (4+1)/(6+1)                         = 5/7
#   corporate          P|won = (3+1)/(4+2) = 2/3, P|lost = (1+1)/(6+2) = 1/4  -> ratio 8/3
#   US                 P|won = (2+1)/(4+2) = 1/2, P|lost = (4+1)/(6+2) = 5/8  -> ratio 4/5
#   posterior odds     5/7 * 8/3 * 4/5 = 32/21  ->  probability 32/53 = 0.6038
TABLE = OutcomeCounts(
    won_total=4,
    lost_total=6,
    by_feature={
        ("enrichment.email_type", "corporate"): (3, 1),
        ("enrichment.email_type", "free"): (1, 5),
        ("lead.country", "DE"): (2, 2),
        ("lead.country", "US"): (2, 4),
    },
)
CORPORATE_US = [("enrichment.email_type", "corporate"), ("lead.country", "US")]


def test_probability_matches_the_hand_computation() -> None:
    result = conversion_probability(CORPORATE_US, TABLE, alpha=1.0, min_outcomes=10)
    assert result.status == "ok"
    assert result.outcomes_seen == 10
    assert result.probability == pytest.approx(32 / 53)


def test_factors_for_and_against_carry_their_weights_and_counts() -> None:
    result = conversion_probability(CORPORATE_US, TABLE, min_outcomes=10)
    assert result.factors_for == [
        {
            "field": "enrichment.email_type",
            "value": "corporate",
            "weight": round(math.log(8 / 3), 4),
            "won": 3,
            "lost": 1,
        }
    ]
    assert result.factors_against == [
        {"field": "lead.country", "value": "US", "weight": round(math.log(4 / 5), 4), "won": 2, "lost": 4}
    ]


def test_no_features_gives_the_smoothed_prior() -> None:
    # (4+1) / (10+2) = 5/12
    assert conversion_probability([], TABLE, min_outcomes=10).probability == pytest.approx(5 / 12)


def test_values_never_seen_in_an_outcome_carry_no_evidence() -> None:
    with_unseen = [*CORPORATE_US, ("lead.country", "FR"), ("enrichment.seniority", "vp")]
    result = conversion_probability(with_unseen, TABLE, min_outcomes=10)
    assert result.probability == pytest.approx(32 / 53)


def test_alpha_changes_the_smoothing() -> None:
    # alpha = 2, V = 2: prior (4+2)/(6+2) = 3/4; free: P|won = (1+2)/(4+4) = 3/8, P|lost = (5+2)/(6+4) = 7/10
    # odds = 3/4 * (3/8) / (7/10) = 3/4 * 15/28 = 45/112 -> probability 45/157
    result = conversion_probability([("enrichment.email_type", "free")], TABLE, alpha=2.0, min_outcomes=10)
    assert result.probability == pytest.approx(45 / 157)


def test_only_the_top_three_factors_each_way_are_reported_strongest_first() -> None:
    counts = OutcomeCounts(won_total=50, lost_total=50)
    features = []
    for i, won in enumerate([30, 40, 35, 45, 10, 20, 5, 15]):
        feature = (f"lead.f{i}", "x")
        counts.by_feature[feature] = (won, 50 - won)
        features.append(feature)
    result = conversion_probability(features, counts)
    assert [f["field"] for f in result.factors_for] == ["lead.f3", "lead.f1", "lead.f2"]
    assert [f["field"] for f in result.factors_against] == ["lead.f6", "lead.f4", "lead.f7"]


@pytest.mark.parametrize(
    ("won", "lost", "min_outcomes"),
    [(4, 6, 11), (0, 40, 30), (40, 0, 30), (0, 0, 0)],
)
def test_insufficient_data(won: int, lost: int, min_outcomes: int) -> None:
    counts = OutcomeCounts(won_total=won, lost_total=lost, by_feature=dict(TABLE.by_feature))
    result = conversion_probability(CORPORATE_US, counts, min_outcomes=min_outcomes)
    assert result.status == "insufficient_data"
    assert result.probability is None
    assert result.outcomes_seen == won + lost
    assert result.factors_for == [] and result.factors_against == []


def test_extreme_evidence_does_not_overflow() -> None:
    counts = OutcomeCounts(won_total=1, lost_total=100_000)
    features = [(f"lead.f{i}", "x") for i in range(400)]
    for feature in features:
        counts.by_feature[feature] = (0, 100_000)
    probability = conversion_probability(features, counts).probability
    assert probability is not None and 0.0 <= probability < 1e-12


def test_recorded_outcomes_build_the_table() -> None:
    counts = OutcomeCounts()
    counts.record([("lead.country", "DE"), ("enrichment.email_type", "corporate")], won=True)
    counts.record([("lead.country", "DE")], won=False)
    counts.record([("lead.country", "US")], won=False)
    assert (counts.won_total, counts.lost_total) == (1, 2)
    assert counts.by_feature == {
        ("lead.country", "DE"): (1, 1),
        ("enrichment.email_type", "corporate"): (1, 0),
        ("lead.country", "US"): (0, 1),
    }


def test_outcome_features_are_categorical_normalized_and_free_of_pii() -> None:
    lead = {
        "first_name": "Anna",
        "last_name": "Schmidt",
        "email": "anna.schmidt@acme.io",
        "phone": "+4915112345678",
        "company": "Acme GmbH",
        "job_title": "Head of Sales",
        "country": "de",
        "language": "DE",
        "message": "call me",
        "utm": {"source": " Google ", "medium": "CPC", "campaign": None},
        "form_id": "demo",
    }
    firm = Firmographic("acme.io", "Acme GmbH", "51-200", "Software", "DE", None)
    enrichment = enrich(lead, firmographic=firm, provider_result=None, provider_status="disabled")
    features = outcome_features(lead, enrichment.as_fields(), context={"source": {"kind": "web"}})
    assert features == [
        ("lead.country", "DE"),
        ("lead.language", "de"),
        ("lead.utm.source", "google"),
        ("lead.utm.medium", "cpc"),
        ("lead.form_id", "demo"),
        ("context.source.kind", "web"),
        ("enrichment.email_type", "corporate"),
        ("enrichment.company.employee_band", "51-200"),
        ("enrichment.company.industry", "software"),
        ("enrichment.seniority", "director"),
        ("enrichment.function", "sales"),
        ("enrichment.phone_line_type", "mobile"),
    ]
    values = " ".join(value for _, value in features)
    for pii in ("anna", "schmidt", "acme", "4915112345678", "call me"):
        assert pii not in values
    assert {name for name, _ in features} <= set(OUTCOME_FEATURES)
