"""Turns a results dict into the Markdown table and the PNG charts the README links."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import scrape

Row = tuple[str, str, str, str, str, str]


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _webhook_paths(webhooks: dict[str, Any]) -> str:
    """The table path beside the hand-off path, and CPU ms per delivery of each process (bench.webhooks)."""
    cpu = "/".join(_n(webhooks.get(f"{mode}_cpu_ms_per_delivery"), 2) for mode in ("handoff", "table", "bare"))
    floor = webhooks.get("floor_per_s")
    if floor is not None:  # the bare client plus the durable bookkeeping alone (bench.webhooks `floor`)
        cpu += f"; floor {_n(floor)}/s at {_n(webhooks.get('floor_cpu_ms_per_delivery'), 2)} ms"
    return f"; table path {_n(webhooks['table_per_s'])}/s; CPU ms per delivery hand-off/table/bare {cpu}"


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def _pair(summary: dict[str, Any], unit: str = "ms") -> str:
    """p50 / p99 of a latency summary, or of wrk's medians (`p50_ms`, `p99_ms`)."""
    p50 = summary.get("p50", summary.get("p50_ms"))
    p99 = summary.get("p99", summary.get("p99_ms"))
    return f"{_n(p50, 1)} / {_n(p99, 1)} {unit}"


def _cpu_text(per_lead: dict[str, float | None]) -> str:
    """CPU ms per lead by process and their sum, e.g. `scoring 1.90 + broker 0.31 = 2.21 ms`."""
    present = {name: ms for name, ms in per_lead.items() if ms is not None}
    if not present:
        return "-"
    parts = " + ".join(f"{name} {ms:.2f}" for name, ms in present.items())
    return f"{parts} = {sum(present.values()):.2f} ms" if len(present) > 1 else f"{parts} ms"


def _cpu_total(per_lead: dict[str, float | None]) -> float | None:
    present = [ms for ms in per_lead.values() if ms is not None]
    return sum(present) if present else None


def _cpu_row(label: str, cpu: dict[str, dict[str, float | None]] | None, baseline: str = "bare") -> list[Row]:
    """One row of CPU ms per lead (from /proc, per process), Handoff against its baseline, if it was measured."""
    if not cpu or not cpu.get("handoff"):
        return []
    base = cpu.get(baseline) or {}
    ratio = _div(_cpu_total(cpu["handoff"]), _cpu_total(base))
    label = f"  {label}: CPU ms per lead, by process"
    return [(label, _cpu_text(cpu["handoff"]), _cpu_text(base), _r(ratio), "-", "-")]


def _as_handoff(cpu: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """A CPU table with `name`'s column read as the compared side (for _cpu_row)."""
    return None if not cpu or not cpu.get(name) else {"handoff": cpu[name], "bare": cpu.get("bare") or {}}


_FLOOR_NAMES = {"floor": "durable floor through FastAPI", "floor_asgi": "durable floor on raw ASGI"}


def _ingest_floor_rows(label: str, stage: dict[str, Any]) -> list[Row]:
    """Each durable floor of an ingest stage: its leads/s against the bare endpoint, and its CPU per lead."""
    out: list[Row] = []
    for name, text in _FLOOR_NAMES.items():
        floor = stage.get(name)
        if not floor:
            continue
        out.append(
            (
                f"  {label}, {text}: acknowledged leads/s (Handoff/floor {_r(stage.get(f'ratio_handoff_{name}'))}; "
                f"per server CPU second {_r(stage.get(f'server_cpu_ratio_handoff_{name}'))})",
                _n(floor["accepted_per_s"]),
                _n(stage["bare"]["accepted_per_s"]),
                _r(stage.get(f"ratio_{name}_bare")),
                "-",
                "-",
            )
        )
        out.extend(_cpu_row(f"{label}, {text}", _as_handoff(stage.get("cpu_ms_per_lead"), name)))
    return out


def rows(results: dict[str, Any]) -> list[Row]:
    """(metric, Handoff, baseline, ratio, target, met?) for every figure measured."""
    out: list[Row] = []
    ingest = results.get("ingest")
    if ingest:
        p = ingest["pinned"]
        out.append(
            (
                "Ingest, pinned (server core 0, wrk core 1): acknowledged leads/s",
                _n(p["handoff"]["accepted_per_s"]),
                _n(p["bare"]["accepted_per_s"]),
                _r(p["ratio"]),
                ">= 0.8x bare",
                _met(p["ratio"] is not None and p["ratio"] >= 0.8),
            )
        )
        out.append(
            (
                f"Ingest, pinned: latency p50 / p99 at saturation ({p['connections']} connections)",
                _pair(p["handoff"]),
                _pair(p["bare"]),
                _r(p["handoff"]["p50_ms"] / p["bare"]["p50_ms"] if p["bare"]["p50_ms"] else None),
                "-",
                "-",
            )
        )
        out.extend(_cpu_row("Ingest, pinned", p.get("cpu_ms_per_lead")))
        out.extend(_ingest_floor_rows("Ingest, pinned", p))
        for key in ("whole_machine", "whole_machine_workers", "whole_machine_postgres"):
            w = ingest.get(key)
            if not w:
                continue
            best = max(
                (ingest[k]["handoff"]["accepted_per_s"] or 0)
                for k in ("whole_machine", "whole_machine_workers", "whole_machine_postgres")
                if k in ingest
            )
            store = ", PostgreSQL" if w.get("store") == "postgresql" else ""
            out.append(
                (
                    f"Ingest, whole machine, {w['workers']} worker(s) each{store}: acknowledged leads/s",
                    _n(w["handoff"]["accepted_per_s"]),
                    _n(w["bare"]["accepted_per_s"]),
                    _r(w["ratio"]),
                    ">= 2,500/s (best setting)",
                    _met(best >= 2500),
                )
            )
            out.append(
                (
                    f"Ingest, whole machine, {w['workers']} worker(s){store}: "
                    f"latency p50 / p99 ({w['connections']} conns)",
                    _pair(w["handoff"]),
                    _pair(w["bare"]),
                    _r(_div(w["handoff"]["p50_ms"], w["bare"]["p50_ms"])),
                    "-",
                    "-",
                )
            )
            out.extend(_cpu_row(f"Ingest, whole machine, {w['workers']} worker(s){store}", w.get("cpu_ms_per_lead")))
            out.extend(_ingest_floor_rows(f"Ingest, whole machine, {w['workers']} worker(s){store}", w))
    e2e = results.get("e2e")
    if e2e and "throughput" in e2e:
        t = e2e["throughput"]
        out.append(
            (
                f"End to end, HTTP to {e2e['measured_to']}: leads/s (baseline: bare 3-hop Kafka chain)",
                _n(t["handoff_per_s"]),
                _n(t["chain_per_s"]),
                _r(t["ratio"]),
                ">= 1,000/s",
                _met((t["handoff_per_s"] or 0) >= 1000),
            )
        )
        out.extend(_cpu_row("End to end", t.get("cpu_ms_per_lead"), baseline="chain"))
        if t.get("floor_per_s") is not None:
            out.append(
                (
                    "  End to end, durable floor (the chain plus the guarantees' bookkeeping, webhook included): "
                    f"leads/s (Handoff/floor {_r(t.get('handoff_of_floor'))})",
                    _n(t["floor_per_s"]),
                    _n(t["chain_per_s"]),
                    _r(t.get("floor_of_chain")),
                    "-",
                    "-",
                )
            )
            cpu = t.get("cpu_ms_per_lead") or {}
            if cpu.get("floor"):
                out.append(
                    (
                        "    durable floor: CPU ms per lead, by process",
                        _cpu_text(cpu["floor"]),
                        _cpu_text(cpu.get("chain") or {}),
                        _r(_div(_cpu_total(cpu["floor"]), _cpu_total(cpu.get("chain") or {}))),
                        "-",
                        "-",
                    )
                )
        for level in e2e.get("latency", []):
            h, c, b = level["handoff"], level["chain"], level["bare_http"]
            label = f"{int(level['fraction'] * 100)}% of max ({h['rate']:g}/s, {h['accepted']} leads)"
            out.append(
                (
                    f"  202 -> assignment p50 / p99 at {label}",
                    _pair(h["accepted_to_assigned_ms"]),
                    _pair(c["latency_ms"]),
                    _r(_div(h["accepted_to_assigned_ms"]["p50"], c["latency_ms"]["p50"])),
                    "-",
                    "-",
                )
            )
            if (f := level.get("floor")) and f.get("latency_ms", {}).get("p50") is not None:
                out.append(
                    (
                        f"    durable floor, source commit -> webhook p50 / p99 at {level['rate']:g}/s",
                        _pair(f["latency_ms"]),
                        _pair(c["latency_ms"]),
                        _r(_div(f["latency_ms"]["p50"], c["latency_ms"]["p50"])),
                        "-",
                        "-",
                    )
                )
            if hops := h.get("hops_ms"):
                # From the records' CreateTime (each relay's send): which stage the latency above is spent in.
                names = {
                    "202_to_received": "ingest relay",
                    "received_to_scored": "scoring",
                    "scored_to_webhook": "routing + sender",
                }
                parts = [f"{label_} {_n(hops[k]['p50'], 1)}" for k, label_ in names.items() if k in hops]
                out.append((f"    per hop p50 ms at {h['rate']:g}/s", ", ".join(parts), "-", "-", "-", "-"))
            if polls := h.get("polls"):
                # From the services' own metrics over the level: what sets each consumer's hop at this rate.
                parts = [scrape.describe(name, figures) for name, figures in polls.items()]
                out.append((f"    polls at {h['rate']:g}/s", "; ".join(parts), "-", "-", "-", "-"))
            out.append(
                (
                    f"  HTTP -> 202 p50 / p99 at {label} (baseline: bare endpoint)",
                    _pair(h["http_to_202_ms"]),
                    _pair(b["http_to_202_ms"]),
                    _r(_div(h["http_to_202_ms"]["p50"], b["http_to_202_ms"]["p50"])),
                    "-",
                    "-",
                )
            )
        for level in e2e.get("latency_above_handoff_max", []):
            # Levels Handoff could not sustain: the baselines' figures at the target's rate, for the record.
            c, f = level.get("chain") or {}, level.get("floor") or {}
            floor_text = _pair(f["latency_ms"]) if f.get("latency_ms", {}).get("p50") is not None else f.get("skipped")
            out.append(
                (
                    f"  at {level['rate']:g}/s (above Handoff's max): bare chain p50 / p99, durable floor",
                    f"floor {floor_text or '-'}",
                    _pair(c["latency_ms"]) if c.get("latency_ms") else "-",
                    "-",
                    "-",
                    "-",
                )
            )
        at_500 = [lv for lv in e2e.get("latency", []) if lv["handoff"]["rate"] >= 500]
        if at_500:
            s = at_500[0]["handoff"]["accepted_to_assigned_ms"]
            ok = (s["p50"] or 1e9) < 20 and (s["p99"] or 1e9) < 100
            out.append(("202 -> assignment at >= 500/s", _pair(s), "-", "-", "p50 < 20, p99 < 100 ms", _met(ok)))
        else:
            out.append(
                (
                    "202 -> assignment at 500/s",
                    f"not reachable: max {_n(t['handoff_per_s'])}/s",
                    "-",
                    "-",
                    "p50 < 20, p99 < 100 ms",
                    _met(False),
                )
            )
    timers = results.get("timers")
    if timers:
        for size in timers["sizes"]:
            n = size["n"]
            h, heap = size["handoff"], size["heap"]
            hb, pb = h["burst"], heap["burst"]
            label = f"{_n(n)} open timers"
            late_ok = hb["complete"] and (hb["late_ms"]["p99"] or 1e12) <= 250
            out.append(
                (
                    f"SLA, {label}: burst of {hb['expected']:,} breaches, detected late p50 / p99 "
                    f"({hb['detected']:,}/{hb['expected']:,} detected)",
                    _pair(hb["late_ms"]),
                    _pair(pb["late_ms"]),
                    _r(_div(hb["late_ms"]["p99"], pb["late_ms"]["p99"])),
                    "p99 <= 250 ms (at 3M)",
                    _met(late_ok),
                )
            )
            if h.get("burst_cpu_ms_per_timer") is not None:
                out.append(
                    (
                        f"SLA, {label}: burst, CPU per breach fired (load average {h.get('load_average', 0):.1f})",
                        _n(h["burst_cpu_ms_per_timer"], 3) + " ms",
                        "-",
                        "-",
                        "-",
                        "-",
                    )
                )
            out.append(
                (
                    f"SLA, {label}: burst, detected late max",
                    _n(hb["late_ms"]["max"], 1) + " ms",
                    _n(pb["late_ms"]["max"], 1) + " ms",
                    _r(_div(hb["late_ms"]["max"], pb["late_ms"]["max"])),
                    "-",
                    "-",
                )
            )
            rec = size["recovery_s"]
            out.append(
                (
                    f"SLA, {label}: restart to first tick that sees them (of which after imports)",
                    f"{_n(rec['handoff'], 2)} s ({_n(rec.get('handoff_after_imports'), 2)} s)",
                    f"{_n(rec['heap'], 2)} s ({_n(rec.get('heap_after_imports'), 2)} s)",
                    _r(rec["ratio"]),
                    "-",
                    "-",
                )
            )
            if rec.get("handoff_after_sigkill") is not None:
                out.append(
                    (
                        f"SLA, {label}: SIGKILL of a process in service to the next one in service "
                        f"(horizon at start: {_n(rec.get('horizon_timers_at_start'))} timers)",
                        f"{_n(rec['handoff_after_sigkill'], 2)} s",
                        "-",
                        "-",
                        "1M in <= 2 s" if n == 1_000_000 else "-",
                        _met(rec["handoff_after_sigkill"] <= 2) if n == 1_000_000 else "-",
                    )
                )
            out.append(
                (
                    f"SLA, {label}: memory (process RSS while idle, imports included)",
                    _n(h.get("rss_mb"), 0) + " MB",
                    _n(heap.get("rss_mb"), 0) + " MB",
                    _r(_div(h.get("rss_mb"), heap.get("rss_mb"))),
                    "-",
                    "-",
                )
            )
            out.append(
                (
                    f"SLA, {label}: idle CPU",
                    _n(h.get("idle_cpu_pct"), 2) + " %",
                    _n(heap.get("idle_cpu_pct"), 2) + " %",
                    "-",
                    "-",
                    "-",
                )
            )
    webhooks = results.get("webhooks")
    if webhooks and "skipped" not in webhooks:
        out.append(
            (
                "Webhooks: deliveries/s to a local receiver (baseline: bare client of the same transport, "
                f"{webhooks.get('transport', 'httpx')}, same bodies"
                + (f"; bare httpx {_n(webhooks['bare_httpx_per_s'])}/s" if webhooks.get("bare_httpx_per_s") else "")
                + (_webhook_paths(webhooks) if webhooks.get("table_per_s") else "")
                + ")",
                _n(webhooks["handoff_per_s"]),
                _n(webhooks["bare_per_s"]),
                _r(webhooks["ratio"]),
                "reported",
                "-",
            )
        )
    elif webhooks:
        out.append(("Webhooks", webhooks["skipped"], "-", "-", "-", "-"))
    for key, label in (("scoring", "Scoring: scored"), ("routing", "Routing (no webhooks): assigned")):
        stage = results.get(key)
        if stage:
            out.append(
                (
                    f"{label} leads/s draining a backlog{' (warm consumers)' if stage.get('warm') else ''} "
                    "(baseline: bare consume-and-produce loop)",
                    _n(stage["handoff_per_s"]),
                    _n(stage["bare_per_s"]),
                    _r(stage["ratio"]),
                    ">= 0.5x bare",
                    _met(stage["ratio"] is not None and stage["ratio"] >= 0.5),
                )
            )
            out.extend(_cpu_row(label.split(":")[0], stage.get("cpu_ms_per_lead")))
            if stage.get("floor_per_s") is not None:
                name = label.split(":")[0]
                out.append(
                    (
                        f"  {name}, durable floor (the bare loop plus dedupe, state and outbox rows, one commit a "
                        f"batch): leads/s (Handoff/floor {_r(stage.get('handoff_of_floor'))})",
                        _n(stage["floor_per_s"]),
                        _n(stage["bare_per_s"]),
                        _r(stage.get("floor_of_bare")),
                        "-",
                        "-",
                    )
                )
                out.extend(_cpu_row(f"{name}, durable floor", _as_handoff(stage.get("cpu_ms_per_lead"), "floor")))
    overload = results.get("overload")
    if overload and overload.get("overload"):
        o = overload["overload"]
        rss = o["rss_mb"]
        counts = ", ".join(f"{status}: {n:,}" for status, n in sorted(o["statuses"].items()))
        out.append(
            (
                f"Ingest at 3x saturation ({o['offered_per_s']:,.0f}/s offered for {o['seconds']:.0f} s): answers",
                counts,
                f"saturation {_n(overload['saturation']['accepted_per_s'])}/s",
                "-",
                "only 202/429/503",
                _met(o["only_allowed"]),
            )
        )
        out.append(
            (
                "Ingest at 3x saturation: latency p50 / p99 from the intended send (acknowledged leads/s)",
                f"{_pair(o)} ({_n(o['accepted_per_s'])}/s)",
                f"{_n(overload['saturation']['p99_ms'], 1)} ms p99 at saturation",
                "-",
                f"p99 bounded (< {overload['client_timeout_s']:.0f} s)",
                _met(o["p99_ms"] is not None and o["p99_ms"] < overload["client_timeout_s"] * 1000),
            )
        )
        steady = o.get("steady")
        if steady:
            out.append(
                (
                    f"Ingest at 3x saturation after the first {steady['after_s']} s: answers, p50 / p99",
                    ", ".join(f"{status}: {n:,}" for status, n in sorted(steady["statuses"].items()))
                    + f"; {_pair(steady)}",
                    "-",
                    "-",
                    "only 202/429/503",
                    _met(steady["only_allowed"]),
                )
            )
        out.append(
            (
                "Ingest at 3x saturation: RSS start / middle / end (max)",
                f"{_n(rss['start'])} / {_n(rss.get('middle'))} / {_n(rss['end'])} ({_n(rss['max'])}) MB",
                "-",
                "-",
                "flat (end within 1.5x of middle)",
                _met(rss.get("middle") is not None and rss["end"] <= 1.5 * rss["middle"]),
            )
        )
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def markdown(results: dict[str, Any], charts: list[str]) -> str:
    m, v = results["machine"], results["versions"]
    lines = [
        f"# Handoff benchmarks, {results['started_at']} ({'quick' if results['quick'] else 'full'} run)",
        "",
        f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gb']} GB; load average at start "
        f"{m['loadavg_start'][0]:.1f}, at end {m.get('loadavg_end', [0])[0]:.1f}. Calibration loop: "
        f"{results['calibration_s']['start']} s at start, {results['calibration_s']['end']} s at end "
        "(higher means a slower or busier machine).",
        f"Versions: Python {v['python']}, Kafka {v['kafka']}, "
        + ", ".join(f"{k} {v[k]}" for k in ("fastapi", "uvicorn", "sqlalchemy", "aiokafka", "httpx") if k in v)
        + ".",
        "Every Handoff figure is beside a baseline measured in the same run on the same machine; throughput runs "
        "alternate A B A B and report medians. Latency from open-loop runs counts from the intended send time.",
        "",
        "| metric | Handoff | baseline | ratio | target | met? |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows(results)]
    if results.get("notes"):
        lines += ["", *[f"- {note}" for note in results["notes"]]]
    if charts:
        lines += ["", *[f"![{Path(c).stem}]({c})" for c in charts]]
    return "\n".join(lines) + "\n"


def charts(results: dict[str, Any], folder: Path, prefix: str) -> list[str]:
    """PNG charts; returns their file names (relative to `folder`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []

    def save(name: str, draw: Callable[[Any], None]) -> None:
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
        draw(ax)
        fig.tight_layout()
        path = folder / f"{prefix}{name}.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path.name)

    def bars(ax: Any, labels: list[str], handoff: list[float], base: list[float], ylabel: str, title: str) -> None:
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], handoff, 0.4, label="Handoff")
        ax.bar([x + 0.2 for x in xs], base, 0.4, label="baseline", color="#999999")
        ax.set_xticks(list(xs), labels)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()

    throughput: list[tuple[str, float, float]] = []
    if results.get("ingest"):
        i = results["ingest"]
        throughput.append(
            ("ingest pinned", i["pinned"]["handoff"]["accepted_per_s"], i["pinned"]["bare"]["accepted_per_s"])
        )
        for key, label in (
            ("whole_machine", "ingest whole"),
            ("whole_machine_workers", "ingest workers"),
            ("whole_machine_postgres", "ingest on PG"),
        ):
            if key in i:
                throughput.append((label, i[key]["handoff"]["accepted_per_s"], i[key]["bare"]["accepted_per_s"]))
    if results.get("e2e", {}).get("throughput"):
        t = results["e2e"]["throughput"]
        throughput.append(("end to end", t["handoff_per_s"], t["chain_per_s"]))
    for key in ("scoring", "routing"):
        if results.get(key):
            throughput.append((key, results[key]["handoff_per_s"], results[key]["bare_per_s"]))
    if results.get("webhooks") and "skipped" not in results["webhooks"]:
        throughput.append(("webhooks", results["webhooks"]["handoff_per_s"], results["webhooks"]["bare_per_s"]))
    if throughput:
        save(
            "throughput",
            lambda ax: (
                bars(
                    ax,
                    [t[0] for t in throughput],
                    [t[1] or 0 for t in throughput],
                    [t[2] or 0 for t in throughput],
                    "per second (log)",
                    "Throughput against same-run baselines",
                ),
                ax.set_yscale("log"),
            ),
        )
    levels = results.get("e2e", {}).get("latency") or []
    if levels:

        def draw_latency(ax: Any) -> None:
            rates = [lv["handoff"]["rate"] for lv in levels]
            for key, source, style, name in (
                ("p50", "handoff", "-o", "Handoff p50"),
                ("p99", "handoff", "-s", "Handoff p99"),
                ("p50", "chain", "--o", "bare chain p50"),
                ("p99", "chain", "--s", "bare chain p99"),
            ):
                field = "accepted_to_assigned_ms" if source == "handoff" else "latency_ms"
                ax.plot(rates, [lv[source][field][key] or 0 for lv in levels], style, label=name)
            ax.set_yscale("log")
            ax.set_xlabel("offered leads/s (open loop)")
            ax.set_ylabel("ms (log)")
            ax.set_title("202 -> assignment latency against a bare 3-hop Kafka chain")
            ax.legend(fontsize=8)

        save("e2e_latency", draw_latency)
    sizes = results.get("timers", {}).get("sizes") or []
    if sizes:

        def draw_timers(ax: Any) -> None:
            labels = [f"{s['n']:,}" for s in sizes]
            xs = range(len(sizes))
            for offset, who, color in ((-0.2, "handoff", None), (0.2, "heap", "#999999")):
                p99 = [s[who]["burst"]["late_ms"]["p99"] or 0.01 for s in sizes]
                ax.bar(
                    [x + offset for x in xs],
                    p99,
                    0.4,
                    label=f"{'Handoff' if who == 'handoff' else 'bare heap'} p99",
                    color=color,
                )
            ax.axhline(250, color="red", linewidth=1, linestyle=":", label="target 250 ms")
            ax.set_xticks(list(xs), labels)
            ax.set_yscale("log")
            ax.set_xlabel("open timers")
            ax.set_ylabel("ms late (log)")
            ax.set_title("SLA breach detection, burst of 5,000 due in one second")
            ax.legend(fontsize=8)

        save("timers", draw_timers)
    return made


def write(results: dict[str, Any], folder: Path, stamp: str, *, complete: bool = True) -> tuple[Path, Path | None]:
    """bench/results/<stamp>.md with its charts, and (for a run of every benchmark) latest.md with latest-*.png.

    A partial run (`--only`) never replaces latest.md: the README's table must come from one run of everything.
    """
    made = charts(results, folder, f"{stamp}-")
    path = folder / f"{stamp}.md"
    path.write_text(markdown(results, made))
    if not complete:
        return path, None
    latest_charts = []
    for name in made:
        target = "latest-" + name.removeprefix(f"{stamp}-")
        shutil.copyfile(folder / name, folder / target)
        latest_charts.append(target)
    latest = folder / "latest.md"
    latest.write_text(markdown(results, latest_charts))
    return path, latest
