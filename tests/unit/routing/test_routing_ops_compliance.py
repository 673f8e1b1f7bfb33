"""How the ops views judge SLA clocks and leads, and the percentiles and buckets they report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from routing.ops.compliance import LeadFacts, OpenClock, SlaClock, clock_outcome, lead_outcome, percentile, summarize

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def clock(
    assignment_id: int = 1,
    *,
    rep: str = "r1",
    start: float = 0,
    due: float = 5,
    ended: float | None = None,
    end_reason: str | None = None,
) -> SlaClock:
    return SlaClock(
        assignment_id=assignment_id,
        lead_id="L",
        rep_id=rep,
        team_id="t",
        assigned_at=at(start),
        due_at=at(due),
        ended_at=at(ended) if ended is not None else None,
        end_reason=end_reason,
    )


def lead(*clocks: SlaClock, touched: float | None = None, routed: float = 0, kind: str = "web") -> LeadFacts:
    return LeadFacts(
        lead_id="L",
        routed_at=at(routed),
        first_touch_at=at(touched) if touched is not None else None,
        team_id="t",
        source_kind=kind,
        source_id=None,
        grade="A",
        clocks=clocks,
    )


@pytest.mark.parametrize(
    ("the_clock", "touched", "expected"),
    [
        (clock(), 4.9, "met"),
        (clock(), 5.0, "met"),  # on the deadline is in time
        (clock(), 5.1, "missed"),  # stopped late (the breach timer had not fired yet)
        (clock(ended=5, end_reason="sla_breach"), 6, "missed"),
        (clock(ended=3, end_reason="disqualified"), None, "met"),
        (clock(ended=7, end_reason="converted"), None, "missed"),
        (clock(ended=2, end_reason="rejected"), None, None),  # handed back: no verdict on this clock
        (clock(), None, None),  # still running
        (clock(start=5, due=10), 4, None),  # touched before this clock started: not this rep's touch
    ],
)
def test_a_clock_is_met_when_the_rep_stops_it_by_the_deadline(
    the_clock: SlaClock, touched: float | None, expected: str | None
) -> None:
    assert clock_outcome(the_clock, at(touched) if touched is not None else None) == expected


def test_a_lead_takes_the_verdict_of_its_first_decided_clock() -> None:
    breached = clock(1, rep="r1", ended=5, end_reason="sla_breach")
    rescued = clock(2, rep="r2", start=5, due=10)
    outcome, deciding = lead_outcome(lead(rescued, breached, touched=6))
    assert (outcome, deciding) == ("missed", breached)
    rejected = clock(1, rep="r1", ended=1, end_reason="rejected")
    outcome, deciding = lead_outcome(lead(rejected, clock(2, rep="r2", start=1, due=6), touched=3))
    assert outcome == "met" and deciding is not None and deciding.rep_id == "r2"
    assert lead_outcome(lead()) == (None, None)


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([42], 0.9) == 42
    assert percentile([30, 10, 20], 0.5) == 20
    assert percentile([10, 20, 30, 40], 0.5) == 25
    assert percentile([0, 100], 0.9) == 90


def test_the_summary_groups_by_rep_per_clock_and_by_source_and_bucket_per_lead() -> None:
    breached_then_touched = lead(
        clock(1, rep="r1", ended=5, end_reason="sla_breach"), clock(2, rep="r2", start=5, due=10), touched=7
    )
    quick = LeadFacts("Q", at(20), at(21), "t", "meta", "s1", "B", (clock(3, rep="r2", start=20, due=25),))
    running = OpenClock("O", 4, "r3", "t", "A", "web", None, "assigned", at(29), at(34), warned=False)
    summary = summarize(
        [breached_then_touched, quick],
        [running],
        since=T0,
        until=at(30),
        now=at(30),
        at_risk_within=timedelta(minutes=5),
        buckets=3,
    )
    assert summary["overall"].items() >= {"leads": 2, "met": 1, "missed": 1, "within_sla_share": 0.5}.items()
    assert (summary["overall"]["open"], summary["overall"]["at_risk"]) == (1, 1)
    assert summary["overall"]["time_to_first_touch_p50_s"] == pytest.approx((7 * 60 + 60) / 2)
    reps = {r["rep_id"]: r for r in summary["by_rep"]}
    assert (reps["r1"]["met"], reps["r1"]["missed"]) == (0, 1)
    assert (reps["r2"]["met"], reps["r2"]["missed"]) == (2, 0)
    # r2's touch times run from their own assignments: 2 minutes and 1 minute.
    assert reps["r2"]["time_to_first_touch_p50_s"] == pytest.approx(90)
    assert (reps["r3"]["leads"], reps["r3"]["open"], reps["r3"]["at_risk"]) == (0, 1, 1)
    sources = {s["source_kind"]: s for s in summary["by_source"]}
    assert sources["web"]["within_sla_share"] == 0.0 and sources["meta"]["within_sla_share"] == 1.0
    assert [b["leads"] for b in summary["series"]] == [1, 0, 1]
    assert summary["series"][1]["within_sla_share"] is None
