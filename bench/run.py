"""`python -m bench.run [--quick] [--only ingest,e2e,timers,webhooks,scoring,routing,overload]`: measure, then report.

Writes bench/results/<UTC time>.json, <UTC time>.md and charts, and refreshes latest.md and latest-*.png.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import report
from bench.util import RESULTS, BenchBroker, calibrate, ensure_wrk, log, machine, versions

BENCHMARKS = ("ingest", "e2e", "timers", "webhooks", "scoring", "routing", "overload")


def _run_one(name: str, tmp: Path, bootstrap: str, quick: bool, results: dict[str, Any]) -> dict[str, Any]:
    if name == "ingest":
        from bench import ingest

        return ingest.run(tmp / "ingest", bootstrap, quick=quick)
    if name == "overload":
        from bench import overload

        return overload.run(tmp / "overload", bootstrap, quick=quick)
    if name == "e2e":
        from bench import e2e

        return e2e.run(tmp / "e2e", bootstrap, quick=quick)
    if name == "timers":
        from bench import timers

        return timers.run(tmp / "timers", quick=quick)
    if name == "webhooks":
        from bench import webhooks

        return webhooks.run(tmp / "webhooks", bootstrap, quick=quick)
    sizes = results.get("e2e", {}).get("value_bytes", {})
    if name == "scoring":
        from bench import scoring

        return scoring.run(tmp / "scoring", bootstrap, quick=quick, out_size=sizes.get("scored") or 1900)
    from bench import routing

    return routing.run(tmp / "routing", bootstrap, quick=quick, out_size=sizes.get("assigned") or 1850)


def _notes(results: dict[str, Any]) -> list[str]:
    notes = []
    cores = results["machine"]["cores"] or 1
    if max(results["machine"]["loadavg_start"][0], results["machine"].get("loadavg_end", [0])[0]) > cores:
        notes.append(
            f"The load average exceeded the {cores} cores during the run: other work shared the machine, "
            "so absolute figures are low and noisy; the same-run ratios are the figures to read."
        )
    e2e = results.get("e2e")
    if e2e and "measured_to" in e2e:
        notes.append(f"End to end is measured up to the {e2e['measured_to']}.")
    if results.get("timers"):
        notes.append(
            "SLA timers: restart times alternate A B A B (medians); each burst runs once per size, because "
            "routing's run changes the store (it escalates the 5,000 leads). Breach lateness is counted to the "
            "commit of the transaction that fires it; routing's own `late_ms` (claim time) is in the JSON."
        )
    if results.get("ingest"):
        notes.append(
            "Ingest latency comes from wrk's closed loop at saturation (queueing included); "
            "end-to-end latency comes from the open-loop generator."
        )
    for name, error in results.get("errors", {}).items():
        notes.append(f"{name} failed: {error.splitlines()[-1] if error else 'unknown error'} (trace in the JSON)")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, 100k timers only (about 5 minutes)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma list of {', '.join(BENCHMARKS)}")
    parser.add_argument("--bootstrap", help="use this Kafka broker instead of starting the bench's own")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    started = datetime.now(UTC)
    stamp = started.strftime("%Y-%m-%dT%H%M%SZ")
    results: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "selected": selected,
        "machine": machine(),
        "versions": {},
        "calibration_s": {"start": calibrate()},
        "durations_s": {},
        "errors": {},
    }
    if {"ingest", "overload"} & set(selected) and ensure_wrk() is None:
        parser.error("wrk is missing and could not be installed (apt-get install -y wrk)")
    results["versions"] = versions()
    needs_broker = any(name != "timers" for name in selected)
    broker = BenchBroker.up(args.bootstrap) if needs_broker else None
    results["broker"] = broker.bootstrap if broker else None
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    try:
        with tempfile.TemporaryDirectory(prefix="handoff-bench-") as scratch:
            for name in selected:
                log(f"--- {name}")
                began = time.monotonic()
                try:
                    results[name] = _run_one(
                        name, Path(scratch), broker.bootstrap if broker else "", args.quick, results
                    )
                except Exception:
                    results["errors"][name] = traceback.format_exc()
                    log(f"{name} failed:\n{results['errors'][name]}")
                results["durations_s"][name] = round(time.monotonic() - began, 1)
    finally:
        if broker is not None:
            broker.down()
    results["calibration_s"]["end"] = calibrate()
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["notes"] = _notes(results)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{stamp}.json"
    json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    md_path, latest = report.write(results, args.out, stamp, complete=set(selected) == set(BENCHMARKS))
    log(f"wrote {json_path}, {md_path} and {latest}")
    print(md_path.read_text())
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
