"""Keep-and-flag and quarantine through ingest's in-process app, on SQLite and PostgreSQL (issue 11 items 1 and 2).

A submission that authenticates and gives a way to reach the person is a lead, its unreadable fields flagged; one that
does not (no usable contact, an unlisted origin, a honeypot hit) is kept in quarantine, listed, released or dismissed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from prometheus_client import REGISTRY

from tests.integration.test_ingest_api import (
    ORIGIN,
    THANK_YOU,
    Ingest,
    _email,
    _key,
    _post,
    _stored,
    _web_source,
    running_ingest,
)
from tests.support.stack import ADMIN, wait_until_async

pytestmark = [pytest.mark.integration]

OPS_TOKEN = "ops-token-for-quarantine-tests"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def ingest(database_url: str) -> AsyncIterator[Ingest]:
    async with running_ingest(database_url) as running:
        yield running


def _counted(source_id: str, reason: str) -> float:
    return REGISTRY.get_sample_value("handoff_quarantined_total", {"source": source_id, "reason": reason}) or 0.0


async def _quarantine(ingest: Ingest, **params: Any) -> list[dict[str, Any]]:
    response = await ingest.client.get("/v1/quarantine", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_the_issue_examples_are_accepted_from_a_web_source_and_flagged(database_url: str) -> None:
    async with running_ingest(database_url) as ingest:
        source = await _web_source(ingest)  # the shipped defaults: no default region
        ahead = (ingest.clock.now + timedelta(hours=1)).isoformat()
        examples = [
            ({"email": _email(), "phone": "(415) 555-2671"}, ["phone_region_assumed"]),
            ({"email": _email(), "phone": "n/a"}, ["phone_unparsed"]),
            ({"email": "jane@acme", "phone": "+14155552671"}, ["email_invalid"]),
            ({"email": _email(), "submitted_at": ahead}, ["submitted_at_clamped"]),
        ]
        stored = []
        for lead, flags in examples:
            response = await _post(ingest, lead, _key(source))
            assert response.status_code == 202, (lead, response.text)
            got = (await ingest.client.get(f"/v1/leads/{response.json()['lead_id']}", headers=ADMIN)).json()["lead"]
            assert got["quality"]["flags"] == flags, lead
            stored.append(got)
        nanp, na, typo, clamped = stored
        assert nanp["phone"] == "+14155552671" and nanp["quality"]["raw"] == {"phone": "(415) 555-2671"}
        assert na["quality"]["raw"] == {"phone": "n/a"} and na["phone"] is None
        assert typo["quality"]["raw"] == {"email": "jane@acme"} and typo["phone"] == "+14155552671"
        assert clamped["submitted_at"] == ingest.clock.now.isoformat()
        assert await _quarantine(ingest) == []


async def test_submissions_that_are_not_leads_are_quarantined_listed_and_counted(database_url: str) -> None:
    async with running_ingest(database_url, ops_token=OPS_TOKEN) as ingest:
        source = await _web_source(ingest)
        key = source["publishable_key"]
        before = {reason: _counted(source["id"], reason) for reason in ("no_contact", "origin_not_allowed", "honeypot")}

        # A back end gets a 422 naming the unusable fields, and the id of the kept submission.
        api = await _post(ingest, {"first_name": "Ann", "email": "ann@", "phone": "n/a"}, _key(source))
        assert api.status_code == 422 and api.json()["error"] == "not_a_lead", api.text
        assert {p["field"] for p in api.json()["detail"]} == {"email", "phone"}
        ingest.clock.advance(seconds=1)  # newest first: one second apart
        # A person at a browser form gets a page saying what to fix, never JSON.
        form = await ingest.client.post(
            "/v1/leads",
            content=urlencode({"_key": key, "name": "Bo", "phone": "none"}),
            headers={**FORM, "Origin": ORIGIN},
        )
        assert form.status_code == 422 and form.headers["content-type"].startswith("text/html")
        assert "reach you" in form.text and "none" not in form.text.replace("none;", "")
        ingest.clock.advance(seconds=1)  # newest first: one second apart
        # A landing page not yet listed: the person is thanked, a script gets the 403 it always did.
        unlisted = {**FORM, "Origin": "https://promo.example.com"}
        thanked = await ingest.client.post(
            "/v1/leads", content=urlencode({"_key": key, "email": _email()}), headers=unlisted
        )
        assert thanked.status_code == 303 and thanked.headers["location"] == THANK_YOU
        ingest.clock.advance(seconds=1)  # newest first: one second apart
        scripted = await _post(
            ingest, {"email": _email()}, {"X-Handoff-Key": key, "Origin": "https://promo.example.com"}
        )
        assert scripted.status_code == 403
        ingest.clock.advance(seconds=1)  # newest first: one second apart
        # A honeypot hit looks accepted.
        trap = urlencode({"_key": key, "email": _email(), "_gotcha": "http://spam.example"})
        trapped = await ingest.client.post("/v1/leads", content=trap, headers={**FORM, "Origin": ORIGIN})
        assert trapped.status_code == 303

        assert await _stored(ingest) == (0, 0)  # none of them is a lead
        items = await _quarantine(ingest)
        assert [i["reason"] for i in items] == ["honeypot", "origin_not_allowed", "origin_not_allowed", "no_contact",
                                                "no_contact"]  # fmt: skip
        assert all(i["status"] == "pending" and i["source"]["id"] == source["id"] for i in items)
        assert items[1]["origin"] == "https://promo.example.com"
        assert items[-1]["id"] == api.json()["quarantine_id"]
        assert items[-1]["fields"] == {"first_name": "Ann", "email": "ann@", "phone": "n/a"}  # the body, as sent
        assert "_key" not in items[2]["fields"] and "_gotcha" not in items[0]["fields"]

        # Filters and cursor paging.
        assert len(await _quarantine(ingest, reason="origin_not_allowed")) == 2
        assert len(await _quarantine(ingest, source_id=source["id"], reason="honeypot")) == 1
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await ingest.client.get("/v1/quarantine", params=params, headers=ADMIN)).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [i["id"] for i in items]

        # Counted per source and reason: in the summary (ops token) and in the metrics.
        ops = {"Authorization": f"Bearer {OPS_TOKEN}"}
        summary = (await ingest.client.get("/v1/quarantine/summary", headers=ops)).json()["items"]
        assert {(g["source"]["id"], g["reason"], g["pending"]) for g in summary} == {
            (source["id"], "no_contact", 2), (source["id"], "origin_not_allowed", 2), (source["id"], "honeypot", 1),
        }  # fmt: skip
        assert (await ingest.client.get("/v1/quarantine", headers=ops)).status_code == 401  # bodies: admin only
        assert _counted(source["id"], "no_contact") - before["no_contact"] == 2
        assert _counted(source["id"], "origin_not_allowed") - before["origin_not_allowed"] == 2
        assert _counted(source["id"], "honeypot") - before["honeypot"] == 1


async def test_malformed_input_is_refused_not_quarantined(ingest: Ingest) -> None:
    source = await _web_source(ingest)
    for body, status in ((b'{"email": ', 400), (b'[{"email": "a@b.co"}]', 422), (b'{"email": {"x": 1}}', 422)):
        response = await ingest.client.post(
            "/v1/leads", content=body, headers={**_key(source), "Content-Type": "application/json"}
        )
        assert response.status_code == status, (body, response.text)
    assert await _quarantine(ingest) == [] and await _stored(ingest) == (0, 0)


async def test_a_release_with_corrections_stores_one_lead_however_often_it_is_asked(ingest: Ingest) -> None:
    source = await _web_source(ingest)
    quarantine_id = (await _post(ingest, {"full_name": "Ann Lee", "phone": "n/a"}, _key(source))).json()[
        "quarantine_id"
    ]
    url = f"/v1/quarantine/{quarantine_id}/release"

    still = await ingest.client.post(url, json={}, headers=ADMIN)
    assert still.status_code == 422 and still.json()["error"] == "not_a_lead"
    email = _email()
    answers = await asyncio.gather(
        *[ingest.client.post(url, json={"fields": {"email": email, "phone": None}}, headers=ADMIN) for _ in range(5)]
    )
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 202], [a.text for a in answers]
    assert len({a.json()["lead_id"] for a in answers}) == 1
    lead_id = answers[0].json()["lead_id"]
    lead = (await ingest.client.get(f"/v1/leads/{lead_id}", headers=ADMIN)).json()["lead"]
    assert (lead["email"], lead["full_name"], lead["phone"]) == (email, "Ann Lee", None)
    assert await _stored(ingest) == (1, 1)  # one lead, one lead.received
    (item,) = await _quarantine(ingest)
    assert (item["status"], item["lead_id"], item["fields"]) == ("released", lead_id, None)  # the lead holds it now

    again = await ingest.client.post(url, json={"fields": {"email": _email()}}, headers=ADMIN)
    assert again.status_code == 200 and again.json()["lead_id"] == lead_id
    refused = await ingest.client.post(f"/v1/quarantine/{quarantine_id}/dismiss", headers=ADMIN)
    assert refused.status_code == 409 and refused.json()["error"] == "released"
    missing = await ingest.client.post("/v1/quarantine/00000000-0000-4000-8000-000000000000/release", headers=ADMIN)
    assert missing.status_code == 404


async def test_a_dismissal_is_recorded_and_erases_the_body(ingest: Ingest) -> None:
    source = await _web_source(ingest)
    quarantine_id = (await _post(ingest, {"first_name": "Zed", "phone": "n/a"}, _key(source))).json()["quarantine_id"]
    dismissed = await ingest.client.post(
        f"/v1/quarantine/{quarantine_id}/dismiss", json={"note": "test entry"}, headers=ADMIN
    )
    assert dismissed.status_code == 200 and dismissed.json()["status"] == "dismissed"
    (item,) = await _quarantine(ingest, status="dismissed")
    assert (item["fields"], item["note"], item["reason"]) == (None, "test entry", "no_contact")
    assert item["decided_at"] is not None
    release = await ingest.client.post(f"/v1/quarantine/{quarantine_id}/release", headers=ADMIN)
    assert release.status_code == 409 and release.json()["error"] == "dismissed"
    again = await ingest.client.post(f"/v1/quarantine/{quarantine_id}/dismiss", headers=ADMIN)
    assert again.status_code == 200  # dismissing twice changes nothing
    assert "Zed" not in str(await _quarantine(ingest))


async def test_quarantined_submissions_are_purged_after_the_retention_period(database_url: str) -> None:
    async with running_ingest(database_url, quarantine_retention_days=1, quarantine_purge_interval_s=0.1) as ingest:
        source = await _web_source(ingest)
        old = (await _post(ingest, {"phone": "n/a"}, _key(source))).json()["quarantine_id"]
        await ingest.client.post(f"/v1/quarantine/{old}/dismiss", headers=ADMIN)
        ingest.clock.advance(hours=20)
        fresh = (await _post(ingest, {"phone": "n/a"}, _key(source))).json()["quarantine_id"]
        ingest.clock.advance(hours=5)  # the old one is 25 hours old, the fresh one 5

        async def only_the_fresh_one() -> bool:
            return [i["id"] for i in await _quarantine(ingest)] == [fresh]

        await wait_until_async(only_the_fresh_one, timeout=10, what="the old submission purged")


async def test_erasing_a_person_erases_their_quarantined_submissions_too(ingest: Ingest) -> None:
    source = await _web_source(ingest)
    email = _email()
    # Kept in quarantine with the person's email in the body: an unlisted origin (form-encoded) and a honeypot hit.
    unlisted = {**FORM, "Origin": "https://promo.example.com"}
    await ingest.client.post("/v1/leads", content=urlencode({"_key": source["publishable_key"], "email": email}),
                             headers=unlisted)  # fmt: skip
    trap = {"X-Handoff-Key": source["publishable_key"], "Origin": ORIGIN}
    await _post(ingest, {"email": email.upper(), "hp_website": "x"}, trap)
    other = (await _post(ingest, {"full_name": "Someone Else", "phone": "n/a"}, _key(source))).json()["quarantine_id"]

    erased = await ingest.client.post("/v1/subjects/erase", json={"email": email}, headers=ADMIN)
    assert erased.status_code == 202, erased.text
    items = await _quarantine(ingest)
    assert email not in str(items).lower()
    assert {(i["reason"], i["status"]) for i in items if i["id"] != other} == {
        ("origin_not_allowed", "dismissed"),
        ("honeypot", "dismissed"),
    }
    assert next(i for i in items if i["id"] == other)["status"] == "pending"  # someone else's stays
