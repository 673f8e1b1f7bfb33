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


def stat_cpu_seconds(stat: str, ticks_per_s: int, *, reaped_children: bool = False) -> float:
    """CPU seconds in one /proc/<pid>/stat line: utime + stime (fields 14, 15), plus cutime + cstime (16, 17) when
    `reaped_children`. Split after the last ")": the command name in field 2 may itself hold spaces and ")"."""
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # fields[0] is field 3 (state)
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / ticks_per_s


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User plus system CPU time of a process, all threads included (and its waited-for children's if asked)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat_cpu_seconds(stat, os.sysconf("SC_CLK_TCK"), reaped_children=reaped_children)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and all its descendants: the live ones read one by one, the exited ones through
    cutime + cstime (the kernel adds a child there only once it is reaped, so nothing is counted twice)."""
    total = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):  # a process that just exited counts as nothing
        total = cpu_seconds(pid, reaped_children=True)
    for child in children(pid):
        total += tree_cpu_seconds(child)
    return total


def per_lead_ms(cpu_s: float | None, leads: int) -> float | None:
    """CPU milliseconds per lead; None when nothing was measured or no lead went through."""
    if cpu_s is None or leads <= 0:
        return None
    return cpu_s * 1000 / leads


def listener_pid(port: int) -> int | None:
    """The process listening on TCP `port` on this machine (the broker's JVM), found through /proc: whichever
    script started it, and whether or not the bench did."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                # local address is HEX_IP:HEX_PORT; state 0A is LISTEN
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def median_cpu(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median CPU ms per lead of each process over runs (each run's `cpu_ms_per_lead`)."""
    names = {name for r in runs for name in r.get("cpu_ms_per_lead", {})}
    medians = {name: median([r.get("cpu_ms_per_lead", {}).get(name) for r in runs]) for name in sorted(names)}
    return {name: None if ms is None else round(ms, 3) for name, ms in medians.items()}


def broker_pid(bootstrap: str) -> int | None:
    """The local broker's pid from its bootstrap address, or None when it runs elsewhere."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost", "") or not port.isdigit():
        return None
    return listener_pid(int(port))


class CpuMeter:
    """CPU seconds per named process over a measured window: `start()`, the work, then `stop()`.

    Processes are trees (uvicorn workers, a stage's children), and one may join after `start()` (a service started
    inside the window counts from zero). A process gone before `stop()` keeps its last reading."""

    def __init__(self, pids: dict[str, int | None] | None = None) -> None:
        self._pids: dict[str, int] = {}
        self._trees: dict[str, bool] = {}
        self._start: dict[str, float] = {}
        self._last: dict[str, float] = {}
        for name, pid in (pids or {}).items():
            self.add(name, pid)

    def add(self, name: str, pid: int | None, *, from_zero: bool = False, tree: bool = True) -> None:
        """Measure `pid` under `name`; `from_zero` for a process started inside the window (all its CPU counts);
        `tree=False` for the bench's own process, whose children are the services measured on their own."""
        if pid is None:
            return
        self._pids[name] = pid
        self._trees[name] = tree
        self._start[name] = 0.0 if from_zero else self._read(name)
        self._last[name] = self._start[name]

    def sample(self) -> None:
        """Read every process now: call before stopping one, so its CPU is kept."""
        for name, pid in self._pids.items():
            if Path(f"/proc/{pid}").exists():
                self._last[name] = max(self._last[name], self._read(name))

    def _read(self, name: str) -> float:
        pid = self._pids[name]
        if self._trees[name]:
            return tree_cpu_seconds(pid)
        with contextlib.suppress(OSError, ValueError, IndexError):
            return cpu_seconds(pid)
        return self._last.get(name, 0.0)

    def stop(self) -> dict[str, float]:
        """CPU seconds each process spent since it was added."""
        self.sample()
        return {name: round(self._last[name] - self._start[name], 3) for name in self._pids}


def cpu_per_lead(cpu_s: dict[str, float], leads: int) -> dict[str, float | None]:
    """CPU ms per lead for each process of a `CpuMeter` reading."""
    return {name: None if (ms := per_lead_ms(s, leads)) is None else round(ms, 3) for name, s in cpu_s.items()}


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
