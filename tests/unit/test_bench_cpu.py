"""The bench's CPU figures: reading /proc/<pid>/stat, and turning CPU seconds into milliseconds per lead."""

from __future__ import annotations

import os

import pytest
from bench.report import _cpu_row, _cpu_text
from bench.util import CpuMeter, cpu_per_lead, cpu_seconds, median_cpu, per_lead_ms, stat_cpu_seconds

pytestmark = pytest.mark.unit

# A real line's shape: the command name in field 2 may hold spaces and parentheses; utime, stime, cutime and cstime
# are fields 14 to 17 (here 250, 50, 120 and 30 ticks).
STAT = (
    "4242 (uvicorn (worker) 1) S 4200 4242 4200 0 -1 4194560 1234 0 0 0 "
    "250 50 120 30 20 0 9 0 123456 987654321 4321 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0"
)


def test_stat_reader_adds_user_and_system_time_of_the_process() -> None:
    assert stat_cpu_seconds(STAT, 100) == pytest.approx(3.0)  # (250 + 50) ticks at 100 Hz


def test_stat_reader_adds_reaped_children_when_asked() -> None:
    # uvicorn's exited workers, a stage's finished children: cutime + cstime count too.
    assert stat_cpu_seconds(STAT, 100, reaped_children=True) == pytest.approx(4.5)


def test_stat_reader_is_not_fooled_by_a_parenthesis_or_space_in_the_command_name() -> None:
    plain = STAT.replace("(uvicorn (worker) 1)", "(python)")
    assert stat_cpu_seconds(plain, 100) == stat_cpu_seconds(STAT, 100)


def test_the_stat_of_this_very_process_reads_as_a_plausible_cpu_time() -> None:
    assert 0 < cpu_seconds(os.getpid()) < 10_000


def test_a_meter_counts_only_the_cpu_spent_inside_its_window() -> None:
    meter = CpuMeter()
    meter.add("bench", os.getpid(), tree=False)
    before = cpu_seconds(os.getpid())
    total = 0
    for i in range(2_000_000):  # some CPU inside the window
        total += i
    spent = meter.stop()["bench"]
    assert 0 < spent <= cpu_seconds(os.getpid()) - before + 0.02  # the window's, not the process' lifetime


def test_cpu_ms_per_lead_is_cpu_seconds_over_leads() -> None:
    assert per_lead_ms(3.0, 1500) == pytest.approx(2.0)  # 3 s of a core for 1,500 leads: 2 ms each
    assert per_lead_ms(3.0, 0) is None  # nothing went through: no figure rather than a division by zero
    assert per_lead_ms(None, 10) is None
    assert cpu_per_lead({"scoring": 2.4, "broker": 0.6}, 2000) == {"scoring": 1.2, "broker": 0.3}


def test_median_over_runs_per_process_and_the_report_row_sums_the_processes() -> None:
    runs = [
        {"cpu_ms_per_lead": {"scoring": 1.0, "broker": 0.2}},
        {"cpu_ms_per_lead": {"scoring": 3.0, "broker": 0.4}},
        {"cpu_ms_per_lead": {"scoring": 2.0, "broker": 0.3}},
    ]
    medians = median_cpu(runs)
    assert medians == {"broker": 0.3, "scoring": 2.0}
    assert _cpu_text({"scoring": 2.0, "broker": 0.3}) == "scoring 2.00 + broker 0.30 = 2.30 ms"
    row = _cpu_row("Scoring", {"handoff": {"scoring": 2.0, "broker": 0.3}, "bare": {"forward": 0.2, "broker": 0.03}})
    assert row[0][1:4] == ("scoring 2.00 + broker 0.30 = 2.30 ms", "forward 0.20 + broker 0.03 = 0.23 ms", "10.00x")
