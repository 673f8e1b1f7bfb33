"""Scoring through the real processes: rulesets over the API, preview against the pipeline, outcomes, erasure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from common.envelope import Event
from common.topics import LEADS_SCORED
from scoring.domain import DEFAULT_RULESET_YAML
from tests.support.stack import ADMIN, Stack, post_lead, read_topic, routed, sample_lead, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

MIN_OUTCOMES = 4

# Leads that exercise different rules: title languages, forms, messages, campaigns, phones, free mail.
VARIED_LEADS: list[dict[str, Any]] = [
    {
        "email": "m.schneider@kunde-gmbh.de",
        "first_name": "Maria",
        "last_name": "Schneider",
        "job_title": "Geschäftsführerin",
        "country": "DE",
        "phone": "+49 30 901820",
        "form_id": "demo-request",
        "message": "Bitte schicken Sie uns ein Angebot mit Preisen",
        "utm": {"source": "google", "medium": "cpc", "campaign": "brand"},
    },
    {
        "email": "lucas.martin@gmail.com",
        "first_name": "Lucas",
        "last_name": "Martin",
        "job_title": "Stagiaire marketing",
        "country": "FR",
        "form_id": "ebook-download",
        "utm": {"source": "linkedin", "medium": "social", "campaign": "ebook-2025"},
    },
    {
        "email": "info@distribuidora-sol.es",
        "first_name": "Ana",
        "last_name": "García",
        "job_title": "Directora comercial",
        "country": "ES",
        "phone": "+34 612 345 678",
        "page_url": "https://example.com/pricing",
        "message": "Necesitamos un presupuesto",
    },
]


def _scored_events(stack: Stack, lead_ids: list[str]) -> dict[str, Event]:
    wanted = set(lead_ids)
    found: dict[str, Event] = {}

    def all_there() -> bool:
        for record in asyncio.run(read_topic(stack.bootstrap, stack.topic(LEADS_SCORED), timeout=2)):
            event = Event.from_record(record.key, record.value, record.headers)
            if event.subject in wanted:
                found[event.subject] = event
        return wanted <= set(found)

    wait_until(all_there, timeout=60, interval=0.5, what=f"lead.scored for {len(wanted)} leads")
    return found


def _score(client: httpx.Client, stack: Stack, lead_id: str, timeout: float = 30) -> dict[str, Any]:
    def scored() -> dict[str, Any] | None:
        response = client.get(f"{stack['scoring'].url}/v1/scores/{lead_id}", headers=ADMIN)
        return response.json() if response.status_code == 200 else None

    return wait_until(scored, timeout=timeout, interval=0.1, what=f"lead {lead_id} scored")


def _post(client: httpx.Client, stack: Stack, lead: dict[str, Any]) -> str:
    response = post_lead(client, stack["ingest"], lead)
    assert response.status_code == 202, response.text
    return str(response.json()["lead_id"])


def test_a_broken_ruleset_is_refused_over_the_api_and_later_leads_carry_the_old_version(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack().start()
    scoring = stack["scoring"].url
    tuned = DEFAULT_RULESET_YAML.replace("min_fit: 40", "min_fit: 35")
    lines = tuned.splitlines()
    broken_line = next(i for i, line in enumerate(lines, 1) if "points: -40" in line)
    broken = "\n".join(
        line.replace("points: -40", "points: -400") if i == broken_line else line for i, line in enumerate(lines, 1)
    )
    with httpx.Client(timeout=10, headers=ADMIN) as client:
        installed = client.put(f"{scoring}/v1/ruleset", content=tuned, headers={"content-type": "application/yaml"})
        assert installed.status_code == 200, installed.text
        version = installed.json()["version"]

        refused = client.put(f"{scoring}/v1/ruleset", content=broken, headers={"content-type": "application/yaml"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "invalid_ruleset"
        [error] = refused.json()["detail"]
        assert error["line"] == broken_line and "-400" in error["reason"], error

        assert client.get(f"{scoring}/v1/ruleset").json()["version"] == version
        lead_id = _post(client, stack, sample_lead(1))
        assert _score(client, stack, lead_id)["ruleset_version"] == version
    [event] = _scored_events(stack, [lead_id]).values()
    assert event.data["score"]["ruleset_version"] == version


def test_preview_gives_the_same_score_as_the_pipeline_for_the_same_lead(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack().start()
    scoring = stack["scoring"].url
    with httpx.Client(timeout=10, headers=ADMIN) as client:
        firmographics = (
            "domain,name,employee_band,industry,country,revenue_band\n"
            "kunde-gmbh.de,Kunde GmbH,51-200,Software,DE,10M-50M\n"
        )
        loaded = client.post(f"{scoring}/v1/firmographics", content=firmographics, headers={"content-type": "text/csv"})
        assert loaded.status_code == 200, loaded.text
        lead_ids = [_post(client, stack, lead) for lead in VARIED_LEADS]
        events = _scored_events(stack, lead_ids)
        grades = set()
        for lead_id in lead_ids:
            pipeline = events[lead_id].data
            preview = client.post(
                f"{scoring}/v1/score/preview",
                json={
                    "lead": pipeline["lead"],
                    "source": pipeline["source"],
                    "is_test": pipeline["is_test"],
                    "duplicate_of": pipeline["duplicate_of"],
                },
            )
            assert preview.status_code == 200, preview.text
            assert preview.json()["score"] == pipeline["score"], lead_id
            assert preview.json()["enrichment"] == pipeline["enrichment"], lead_id
            grades.add(pipeline["score"]["grade"])
            # Preview stores and emits nothing: the stored score is still the pipeline's.
            assert _score(client, stack, lead_id)["score"] == pipeline["score"]
    assert len(grades) > 1, "the sample leads should not all land on one grade"
    assert events[lead_ids[0]].data["enrichment"]["company"]["name"] == "Kunde GmbH"


def test_outcomes_teach_a_conversion_probability_and_erasure_keeps_only_anonymous_counts(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(env={"HANDOFF_CONVERSION_MIN_OUTCOMES": str(MIN_OUTCOMES)}).start()
    routing = stack["routing"].url
    leads = [
        sample_lead(i, country=country, job_title=title, phone=f"+49 30 90182{i:02d}")
        for i, (country, title) in enumerate(
            [("DE", "Head of Sales"), ("DE", "VP Marketing"), ("FR", "Intern"), ("US", "Student"), ("DE", "CEO")]
        )
    ]
    outcomes = [("convert", None), ("convert", None), ("disqualify", "no_budget"), ("disqualify", "student")]
    with httpx.Client(timeout=10, headers=ADMIN) as client:
        lead_ids = [_post(client, stack, lead) for lead in leads[:4]]
        wait_until(lambda: len(routed(client, stack["routing"], lead_ids)) == 4, timeout=60, what="4 leads routed")

        def act(lead_id: str, action: str, reason: str | None) -> None:
            body = {"action": action, **({"reason": reason} if reason else {})}
            response = client.post(f"{routing}/v1/leads/{lead_id}/actions", json=body)
            assert response.status_code == 200, response.text
            wait_until(
                lambda: _score(client, stack, lead_id)["outcome"] is not None,
                timeout=30,
                what=f"scoring saw the outcome of {lead_id}",
            )

        for lead_id, (action, reason) in zip(lead_ids[:3], outcomes[:3], strict=True):
            act(lead_id, action, reason)
        assert [_score(client, stack, lead_id)["outcome"] for lead_id in lead_ids[:3]] == ["won", "won", "lost"]

        too_few = _score(client, stack, _post(client, stack, sample_lead(10, country="DE")))["conversion"]
        assert too_few == {
            "probability": None,
            "status": "insufficient_data",
            "outcomes_seen": 3,
            "factors_for": [],
            "factors_against": [],
        }

        act(lead_ids[3], *outcomes[3])
        learned = _score(client, stack, _post(client, stack, leads[4]))["conversion"]
        assert learned["status"] == "ok" and learned["outcomes_seen"] == MIN_OUTCOMES
        assert 0.5 < learned["probability"] < 1, learned  # German leads converted, the others did not
        assert ("lead.country", "DE") in {(f["field"], f["value"]) for f in learned["factors_for"]}

        # Erasure at the front door reaches scoring: the personal data goes, the anonymous counts stay.
        erased_id = lead_ids[0]
        assert client.delete(f"{stack['ingest'].url}/v1/leads/{erased_id}").status_code == 202
        record = wait_until(
            lambda: (r := _score(client, stack, erased_id))["erased"] and r,
            timeout=30,
            what="scoring erased the lead",
        )
        assert record["lead"] is None
        stored = json.dumps(record)
        for personal in (leads[0]["email"], leads[0]["last_name"], "901820", "example.org"):
            assert personal not in stored, personal
        assert record["outcome"] == "won" and record["score"]["fired"]
        after = _score(client, stack, _post(client, stack, leads[4] | {"email": "ceo2@example.org"}))["conversion"]
        assert after["outcomes_seen"] == MIN_OUTCOMES and after["probability"] == pytest.approx(learned["probability"])

    # Nothing personal reached scoring's logs, whatever happened above.
    logs = stack["scoring"].logs()
    assert "lead.received" in logs or "consumer_started" in logs, "the scoring log was captured"
    for lead in leads:
        assert lead["email"] not in logs and lead["last_name"] not in logs
        assert lead["phone"].replace(" ", "") not in logs.replace(" ", "")
