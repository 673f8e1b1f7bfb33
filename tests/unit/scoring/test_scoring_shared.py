"""Leads alike share their enrichment, score dict, features and JSON (the consumer's batch): the same values,
field for field and byte for byte, as each lead's own, for leads that repeat and leads that do not."""

from __future__ import annotations

import itertools
import sqlite3
from typing import Any

import pytest
from sqlalchemy import Boolean
from sqlalchemy.dialects import sqlite

from common import sqlprep
from common.envelope import dumps
from scoring import store
from scoring.domain import (
    DEFAULT_RULESET_YAML,
    EnrichmentMemo,
    Firmographic,
    ScoreDicts,
    batch_features,
    enrich,
    load_ruleset,
    lookup_domain,
    outcome_features,
    score_lead,
)
from scoring.values import FeatureTexts, serialize_once

pytestmark = pytest.mark.unit

ACME = Firmographic("acme.io", "Acme GmbH", "201-500", "Software", "DE", "10M-50M")
EMAILS = ["ann@acme.io", "sales@acme.io", "bob@gmail.com", "x@mailinator.com", "broken", None, "eve@sub.acme.io"]
PHONES = [None, "", "+4915112345678", "+12015550123", "+999", 42]
TITLES = [None, "VP Sales", "Head of Marketing", "student", "", 7]
WEBSITES = [None, "https://www.acme.io/about", "globex.com"]
ANSWERS: list[tuple[Any, str]] = [
    (None, "disabled"),
    (None, "no_domain"),
    (None, "timeout"),
    ({"seniority": "vp", "company": {"industry": "Software"}}, "timeout"),
    ({"seniority": "vp", "function": "sales", "company": {"employee_band": "51-200", "country": "us"}}, "ok"),
]


def _leads() -> list[dict[str, Any]]:
    return [
        {"email": e, "phone": p, "job_title": t, "website": w, "country": "DE", "utm": {"source": "ads"}}
        for e, p, t, w in itertools.product(EMAILS, PHONES, TITLES, WEBSITES)
    ]


@pytest.mark.parametrize("size", [1024, 3])
def test_a_remembered_enrichment_is_the_one_enrich_builds(size: int) -> None:
    memo = EnrichmentMemo(size=size)
    for _round in range(2):
        for lead in _leads():
            for (result, status), firmographic in itertools.product(ANSWERS, [None, ACME]):
                expected = enrich(lead, firmographic=firmographic, provider_result=result, provider_status=status)
                got, fields = memo.enrich(
                    lead,
                    domain=lookup_domain(lead),
                    firmographic=firmographic,
                    provider_result=result,
                    provider_status=status,
                )
                assert got == expected, lead
                assert fields == expected.as_fields()
                assert dumps(got.to_serialize()) == dumps(expected.to_serialize())


def test_leads_alike_share_one_enrichment_a_provider_answer_never() -> None:
    memo = EnrichmentMemo()
    lead = {"email": "ann@acme.io", "job_title": "VP Sales"}
    other = {"email": "bob@acme.io", "job_title": "VP Sales", "message": "hello"}

    def ask(lead: dict[str, Any], result: Any = None, status: str = "disabled") -> Any:
        return memo.enrich(
            lead, domain=lookup_domain(lead), firmographic=ACME, provider_result=result, provider_status=status
        )

    assert ask(lead) is ask(other)
    assert ask(lead, {"seniority": "vp"}, "ok")[0] is not ask(other, {"seniority": "vp"}, "ok")[0]
    with pytest.raises(ValueError, match="provider_status"):
        ask(lead, None, "maybe")


@pytest.mark.parametrize("size", [1024, 2])
def test_a_kept_score_dict_is_the_scores_own(size: int) -> None:
    ruleset = load_ruleset(DEFAULT_RULESET_YAML)
    kept = ScoreDicts(size=size)
    contexts = [
        {"source": {"kind": kind}, "is_test": test, "duplicate_of": None, "repeat_count": repeats}
        for kind, test, repeats in itertools.product(["web", "api"], [False, True], [0, 2])
    ]
    for _round in range(2):
        for lead, context in itertools.product(_leads(), contexts):
            enrichment = enrich(lead, firmographic=ACME, provider_result=None, provider_status="disabled")
            score = score_lead(lead, enrichment, ruleset, context=context)
            assert kept.of(score) == score.to_dict()


def test_batch_features_are_each_leads_outcome_features() -> None:
    memo = EnrichmentMemo()
    leads = _leads()
    contexts = [{"source": {"kind": "web" if i % 2 else "api"}} for i in range(len(leads))]
    all_fields = [
        memo.enrich(lead, domain=lookup_domain(lead), firmographic=None, provider_result=r, provider_status=s)[1]
        for lead, (r, s) in zip(leads, itertools.cycle(ANSWERS), strict=False)
    ]
    expected = [outcome_features(lead, f, context=c) for lead, f, c in zip(leads, all_fields, contexts, strict=True)]
    assert batch_features(leads, all_fields, contexts) == expected
    texts = FeatureTexts(size=5)
    for features in expected + expected:
        assert texts.text(features) == dumps(features).decode()


def test_a_shared_value_is_serialized_once_a_batch() -> None:
    serialized: dict[int, tuple[bytes, str]] = {}
    shared = {"grade": "A"}
    first = serialize_once(serialized, shared, shared)
    assert first == (b'{"grade":"A"}', '{"grade":"A"}')
    assert serialized[id(shared)] is first


def test_a_batch_of_scored_rows_goes_to_sqlite_unprocessed_flags_stored_as_boolean_stores_them() -> None:
    dialect = sqlite.dialect()
    table = store._SCORED_TABLE
    plan = sqlprep.insert_plan(dialect, table, tuple(column.name for column in table.columns))
    assert plan is not None and not plan.processors and not plan.constants
    process = Boolean().bind_processor(dialect)
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (a BOOLEAN, b BOOLEAN)")
    connection.executemany("INSERT INTO t VALUES (?, ?)", [(True, False), (process(True), process(False))])
    assert (
        connection.execute("SELECT a, typeof(a), b, typeof(b) FROM t").fetchall() == [(1, "integer", 0, "integer")] * 2
    )
