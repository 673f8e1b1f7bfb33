"""`python -m bench.polltrace RATE SECONDS [--bootstrap B]`: where a consumer poll's wall time goes at one rate.

Starts the whole stack (the end-to-end bench's seed, rules and local webhook receiver) with `sitecustomize` from this
folder loaded into every service, warms it, sends RATE leads/s open loop for SECONDS, and prints, per consumer, the
mean poll: events, wall time = wait for SQLite's writer lock + transaction body + commit (+ the rest: parsing, the
offsets), the loop thread's CPU, and the other write transactions of the window (the webhook sender's records, the
relay's deletes, the timers). Used for the 500/s latency analysis in bench/results/e2e.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from tests.e2e.conftest import EVEN_RULES, EVEN_SEED
from tests.support.stack import ROOT, Service, Stack, free_port

from bench.e2e import SOURCE_KEYS, WebhookArrivals, closed_load, open_load, register_webhook
from bench.ingest import source_key
from bench.util import UVICORN_ARGS, BenchBroker


def summarize(folder: Path, start: float, end: float) -> list[str]:
    lines = []
    for path in sorted(folder.glob("*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        polls = [r for r in records if "other" not in r and start <= r["t"] <= end]
        others = [r for r in records if "other" in r and start <= r["t"] <= end]
        if not polls:
            continue

        def mean_ms(key: str, rows: list[dict[str, Any]] = polls) -> float:
            return statistics.mean(r[key] for r in rows) * 1000

        wall = sorted(r["wall"] for r in polls)
        rest = mean_ms("wall") - mean_ms("lock") - mean_ms("body") - mean_ms("commit")
        lines.append(
            f"{polls[0]['svc']}: {len(polls)} polls of {statistics.mean(r['n'] for r in polls):.1f} events; wall "
            f"{mean_ms('wall'):.2f} ms = writer lock {mean_ms('lock'):.2f} + body {mean_ms('body'):.2f} + commit "
            f"{mean_ms('commit'):.2f} + rest {rest:.2f}; loop-thread CPU {mean_ms('cpu'):.2f} ms; wall p50/p90/p99 "
            + " / ".join(f"{wall[int(len(wall) * q)] * 1000:.1f}" for q in (0.5, 0.9, 0.99))
        )
        if "c_sql" in polls[0]:
            flush = mean_ms("commit") - mean_ms("c_queue") - mean_ms("c_sql") - mean_ms("c_back")
            lines.append(
                f"  commit = to the commit thread {mean_ms('c_queue'):.2f} + COMMIT (fsync) {mean_ms('c_sql'):.2f} + "
                f"back to the loop {mean_ms('c_back'):.2f} + flush and listeners {flush:.2f} ms"
            )
        if others:
            lines.append(
                f"  other write transactions: {len(others)}, mean writer lock {mean_ms('lock', others):.2f} + body "
                f"{mean_ms('body', others):.2f} + commit {mean_ms('commit', others):.2f} ms"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.polltrace")
    parser.add_argument("rate", type=float)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--bootstrap", help="use this Kafka broker instead of starting the bench's own")
    args = parser.parse_args()
    broker = BenchBroker.up(args.bootstrap)
    with tempfile.TemporaryDirectory(prefix="handoff-polltrace-") as scratch:
        tmp = Path(scratch)
        out = tmp / "trace"
        out.mkdir()
        os.environ["POLLTRACE_OUT"] = str(out)
        # ROOT/services named too: the editable install points at one checkout, and a worktree's run must trace its own.
        os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), str(ROOT / "services"), str(ROOT)])
        env = {"HANDOFF_WEBHOOK_ALLOW_LOOPBACK": "true"}
        stack = Stack(tmp / "stack", broker.bootstrap, seed=EVEN_SEED, rules=EVEN_RULES, env=env)
        for service in stack.services.values():
            service.extra_args = list(UVICORN_ARGS)
        receiver = Service(
            "bench.receiver", free_port(), dict(stack.env), tmp / "receiver.log", extra_args=list(UVICORN_ARGS)
        )
        try:
            stack.start()
            receiver.start()
            register_webhook(stack["routing"], f"{receiver.url}/hook")
            SOURCE_KEYS[stack["ingest"].port] = source_key(stack["ingest"])
            arrivals = WebhookArrivals(receiver)
            uvloop.run(closed_load(stack["ingest"], 3, 16))  # warm: every path run, caches filled
            time.sleep(3)
            start = time.time()
            sent, _ = uvloop.run(open_load(stack["ingest"], args.rate, args.seconds))
            ids = {s.lead_id for s in sent if s.status == 202 and s.lead_id}
            arrivals.wait_count(len(ids), 60, ids)
            end = time.time()
            latency = sorted(
                (hook - s.answered) * 1000
                for s in sent
                if s.lead_id and s.answered and (hook := arrivals.arrival(s.lead_id)) is not None
            )
        finally:
            receiver.stop()
            stack.stop()
            broker.down()
        if latency:
            p50, p99 = latency[len(latency) // 2], latency[int(len(latency) * 0.99)]
            print(f"{len(latency)} leads at {args.rate:g}/s: 202 -> webhook p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        for line in summarize(out, start, end):
            print(line)


if __name__ == "__main__":
    main()
