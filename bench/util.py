"""Shared helpers: machine facts, calibration, statistics, process pinning and sampling, the bench broker."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.stack import ROOT, Broker

RESULTS = ROOT / "bench" / "results"
PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "sqlalchemy",
    "aiosqlite",
    "aiokafka",
    "httpx",
    "orjson",
    "structlog",
)
BENCH_KAFKA_PORT = int(os.environ.get("BENCH_KAFKA_PORT", "19092"))
# Same event loop and HTTP parser for every server under test, and no access log on either side.
UVICORN_ARGS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]


def log(message: str) -> None:
    """Progress on stderr, so stdout stays machine-readable where a module prints JSON."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- statistics ---------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max and count of a latency sample (same unit as given)."""
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


def interleave(repeats: int, a: Callable[[int], Any], b: Callable[[int], Any]) -> tuple[list[Any], list[Any]]:
    """Run A B A B ...: drifting machine load then hits both sides alike."""
    first: list[Any] = []
    second: list[Any] = []
    for i in range(repeats):
        first.append(a(i))
        second.append(b(i))
    return first, second


# -- machine ------------------------------------------------------------------------------------------------------


def calibrate(loops: int = 3_000_000, rounds: int = 3) -> float:
    """Seconds for a fixed pure-Python loop (best of `rounds`): compare runs across machines and days."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        total = 0
        for i in range(loops):
            total += i * i % 7
        best = min(best, time.perf_counter() - started)
    return round(best, 4)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _kafka_version() -> str:
    if os.environ.get("KAFKA_VERSION"):
        return os.environ["KAFKA_VERSION"]
    for line in (ROOT / "scripts/kafka.sh").read_text().splitlines():
        if line.startswith('KAFKA_VERSION="${KAFKA_VERSION:-'):
            return line.split(":-", 1)[1].split("}", 1)[0]
    return "unknown"


def _java_version() -> str:
    java = shutil.which("java")
    if not java:
        return "missing"
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr.splitlines()
    return out[0] if out else "unknown"


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory and load: enough to tell whether two result files are comparable."""
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "loadavg_start": list(os.getloadavg()),
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "kafka": _kafka_version(), "java": _java_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    wrk = shutil.which("wrk")
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True)
        found["wrk"] = (out.stdout or out.stderr).split("[", 1)[0].replace("wrk", "").strip()
    return found


# -- processes ----------------------------------------------------------------------------------------------------


def pin(pid: int, cpus: str) -> None:
    """Pin every thread of a running process (and the threads it starts later) to `cpus`, e.g. "0"."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


def children(pid: int) -> list[int]:
    """Direct child processes (uvicorn's workers under its supervisor)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int | str = "self", key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def ensure_wrk() -> str | None:
    """wrk from Debian's packages, installed once when missing and we are root; None if unavailable."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    log("wrk not found; installing Debian's wrk")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True)
    return shutil.which("wrk")


@dataclass
class BenchBroker:
    """The bench's own broker (port 19092, data under .data/bench-kafka) or one given by --bootstrap."""

    bootstrap: str
    broker: Broker | None = None
    started_here: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def up(cls, bootstrap: str | None) -> BenchBroker:
        if bootstrap:
            return cls(bootstrap, notes=[f"reused broker {bootstrap}"])
        broker = Broker(port=BENCH_KAFKA_PORT, data_dir=ROOT / ".data" / "bench-kafka")
        was_running = broker.running()
        if not was_running:
            log(f"starting the bench broker on 127.0.0.1:{BENCH_KAFKA_PORT}")
            broker.start()
        return cls(broker.bootstrap, broker, started_here=not was_running)

    def down(self) -> None:
        if self.broker is not None and self.started_here:
            log("stopping the bench broker")
            self.broker.stop()


@contextlib.contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        into[key] = round(time.perf_counter() - started, 3)
