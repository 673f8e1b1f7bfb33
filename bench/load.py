"""Load generators: wrk (closed loop, for throughput) and an open-loop HTTP client on a fixed schedule (for latency)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

# Each request gets an email no earlier request had (run id, wrk thread, counter): ingest's dedupe never
# short-circuits. `response` counts 202s per thread so "acknowledged" means exactly that.
WRK_SCRIPT = r"""
-- `id` and `accepted` are globals on purpose: thread:set/get reach globals only.
local run, counter = "r", 0
id, accepted = 0, 0
local threads = {}
local token = os.getenv("BENCH_TOKEN") or ""
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  run = args[1] or "r"
end

function request()
  counter = counter + 1
  local body = string.format('{"email":"b%s-%d-%d@example.org","first_name":"Bench","last_name":"Lead %d",' ..
    '"company":"Example Org","job_title":"Head of Sales","country":"DE","utm_source":"bench"}',
    run, id, counter, counter)
  return wrk.format("POST", "/v1/leads", headers, body)
end

function response(status, hdrs, body)
  if status == 202 then accepted = accepted + 1 end
end

function done(summary, latency, requests)
  local acc = 0
  for _, t in ipairs(threads) do acc = acc + (t:get("accepted") or 0) end
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"accepted":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, acc, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    accepted: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "accepted_per_s": round(self.accepted_per_s, 1)}


def run_wrk(
    url: str,
    *,
    token: str,
    seconds: float,
    connections: int,
    threads: int = 1,
    cpus: str | None = None,
) -> WrkResult:
    """Closed loop at saturation for `seconds`; `cpus` pins the generator (e.g. "1")."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        script.name,
        url,
        "--",
        uuid.uuid4().hex[:8],
    ]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env={"BENCH_TOKEN": token, "PATH": "/usr/bin:/bin"}
        )
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
    raw = json.loads(line.removeprefix("BENCHJSON "))
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return WrkResult(
        requests=raw["requests"],
        accepted=raw["accepted"],
        seconds=raw["duration_us"] / 1e6,
        errors=errors,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
    )


# -- a small keep-alive HTTP/1.1 client: httpx would cost more CPU than the servers it measures --------------------


class RawHttp:
    """POSTs over a pool of keep-alive connections; waits for a free one rather than hide queueing."""

    def __init__(self, host: str, port: int, *, max_connections: int, headers: dict[str, str]) -> None:
        self._host = host
        self._port = port
        self._max = max_connections
        self._open = 0
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())

    async def _acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._idle.empty() and self._open < self._max:
            self._open += 1
            try:
                return await asyncio.open_connection(self._host, self._port)
            except BaseException:
                self._open -= 1
                raise
        return await self._idle.get()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body); a broken connection is dropped and the error raised."""
        reader, writer = await self._acquire()
        try:
            request = f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n".encode()
            writer.write(request + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            payload = await reader.readexactly(length) if length else b""
        except BaseException:
            self._open -= 1
            writer.close()
            raise
        self._idle.put_nowait((reader, writer))
        return status, payload

    async def close(self) -> None:
        while not self._idle.empty():
            _reader, writer = self._idle.get_nowait()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@dataclass
class Sent:
    """One open-loop request: when it was due, when its answer came, and the lead id in it."""

    intended: float
    answered: float | None = None
    status: int | None = None
    lead_id: str | None = None


def lead_body(run: str, i: int) -> bytes:
    return orjson.dumps(
        {
            "email": f"o{run}-{i}@example.org",
            "first_name": "Bench",
            "last_name": f"Lead {i}",
            "company": "Example Org",
            "job_title": "Head of Sales",
            "country": "DE",
            "utm_source": "bench",
        }
    )


async def open_loop(
    client: RawHttp, *, rate: float, seconds: float, path: str = "/v1/leads"
) -> tuple[list[Sent], float]:
    """Send on a fixed schedule (rate per second) whatever the answers do; returns the requests and the start."""
    run = uuid.uuid4().hex[:8]
    total = max(1, int(rate * seconds))
    sent = [Sent(0.0) for _ in range(total)]
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        try:
            status, payload = await client.post(path, lead_body(run, i))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            sent[i].answered = time.time()
            return
        sent[i].answered = time.time()
        sent[i].status = status
        if status in (200, 202) and payload.startswith(b"{"):
            sent[i].lead_id = orjson.loads(payload).get("lead_id")

    start = time.time() + 0.05
    for i in range(total):
        due = start + i / rate
        sent[i].intended = due
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return sent, start


async def closed_loop(client: RawHttp, *, seconds: float, concurrency: int) -> tuple[list[Sent], float]:
    """Requests with `concurrency` in flight for `seconds`: the most the server takes, for throughput runs."""
    run = uuid.uuid4().hex[:8]
    sent: list[Sent] = []
    start = time.time()
    deadline = start + seconds

    async def worker() -> None:
        while time.time() < deadline:
            item = Sent(time.time())
            sent.append(item)
            try:
                status, payload = await client.post("/v1/leads", lead_body(run, len(sent)))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                item.answered = time.time()
                continue
            item.answered = time.time()
            item.status = status
            if status in (200, 202) and payload.startswith(b"{"):
                item.lead_id = orjson.loads(payload).get("lead_id")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sent, start
