"""The shared chassis every service uses instead of its own copy: the erasure rule, the problem answer, the poller."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from common.erasure import anonymous_enrichment
from common.runtime import poll_until
from common.web import install_error_handlers, problem

pytestmark = pytest.mark.unit

_ENRICHMENT = {
    "email_type": "corporate",
    "domain": "initech.example",
    "company": {
        "domain": "initech.example",
        "name": "Initech",
        "employee_band": "201-500",
        "industry": "software",
        "country": "US",
        "revenue_band": "10M-50M",
    },
    "phone_country": "US",
    "phone_line_type": "mobile",
    "seniority": "vp",
    "function": "sales",
    "provider": {"status": "ok", "company": {"name": "Initech Inc", "domain": "initech.example"}},
    "partial": False,
    "match": {"by": "domain", "value": "initech.example"},
    "steps": [{"step": "domain", "detail": "initech.example"}, {"step": "title", "detail": "VP Sales"}],
}


def test_an_erased_enrichment_keeps_only_categories_and_never_the_company_name() -> None:
    erased = anonymous_enrichment(_ENRICHMENT)

    assert erased == {
        "email_type": "corporate",
        "phone_country": "US",
        "phone_line_type": "mobile",
        "seniority": "vp",
        "function": "sales",
        "partial": False,
        "company": {"employee_band": "201-500", "industry": "software", "country": "US", "revenue_band": "10M-50M"},
    }
    for identifying in ("initech", "Initech", "VP Sales"):
        assert identifying not in repr(erased)


def test_erasure_leaves_absent_fields_absent_and_passes_nothing_through() -> None:
    assert anonymous_enrichment(None) is None
    assert anonymous_enrichment({"company": {"name": "Initech"}, "seniority": "vp"}) == {
        "company": {},
        "seniority": "vp",
    }
    assert anonymous_enrichment({"company": None, "new_field": "x"}) == {"company": None}


async def test_problem_answers_in_the_shared_error_shape_with_its_headers() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/limited")
    async def limited() -> None:
        raise problem(429, "too_many_requests", "slow down", headers={"Retry-After": "3"})

    @app.get("/missing")
    async def missing() -> None:
        raise problem(404, "not_found", [{"field": "lead_id", "reason": "no such lead"}])

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        limited_answer = await client.get("/limited")
        missing_answer = await client.get("/missing")

    assert limited_answer.status_code == 429
    assert limited_answer.json() == {"error": "too_many_requests", "detail": "slow down"}
    assert limited_answer.headers["retry-after"] == "3"
    assert missing_answer.status_code == 404
    assert missing_answer.json() == {"error": "not_found", "detail": [{"field": "lead_id", "reason": "no such lead"}]}


async def test_poll_until_goes_again_while_work_waits_sleeps_until_woken_and_stops_at_once() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    answers: list[bool | float | Exception] = [True, True, False, 0.0, RuntimeError("store down"), False]
    rounds = 0

    async def work() -> bool | float:
        nonlocal rounds
        rounds += 1
        answer = answers.pop(0) if answers else False
        if isinstance(answer, Exception):
            raise answer
        return answer

    # Intervals of an hour: every round after the first comes from "more waiting", a zero pause or a wake-up.
    task = asyncio.create_task(poll_until(stop, work, interval_s=3600, wake=wake, name="test", error_pause_s=3600))
    for expected in (3, 5, 6):
        while rounds < expected:
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert rounds == expected, "the loop sleeps (an hour) until woken, a failed round included"
        if expected < 6:
            wake.set()
    stop.set()
    wake.set()
    await asyncio.wait_for(task, 5)  # stopping does not wait out the hour
    assert rounds == 6
