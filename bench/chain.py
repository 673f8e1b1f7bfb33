"""Bare Kafka stages, one process each, built with the services' own client settings (`common.kafka`).

    python -m bench.chain source  --bootstrap B --out T --n N --size BYTES [--rate R]
    python -m bench.chain forward --bootstrap B --in T1 --out T2 --n N [--size BYTES] --group G
    python -m bench.chain observe --bootstrap B --in T
    python -m bench.chain source|forward --durable DIR ...; webhook --durable DIR --url U ...  (bench.durable)

`forward` is the baseline of a Handoff consumer (consume a batch, produce each record, await delivery, commit);
`observe` prints one line per record, `<key> <arrival unix time> <t0 or ->`, as the records arrive.
`source --warm W` first sends W records (t0 `-`, left out of every figure), prints READY and waits for a line on
stdin: the measured records then leave a warm producer (metadata, the leader's connection, every code path run once)
into a chain whose consumers have fetched and forwarded, so none waits for a first fetch after the group join.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from typing import Any

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from common.kafka import new_consumer, new_producer
from common.settings import ServiceSettings


def _settings(bootstrap: str, group: str) -> ServiceSettings:
    return ServiceSettings(kafka_bootstrap=bootstrap, service_name=group, env="development", topic_namespace="bench.")


def _value(size: int, i: int) -> bytes:
    # JSON-shaped bytes of the given size, unique per record so nothing compresses or dedupes them away.
    head = b'{"i":%d,"pad":"' % i
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


async def _ready(consumer: AIOKafkaConsumer) -> None:
    """Tell the parent once partitions are assigned, so no measurement includes a group join."""
    # The group coordinator runs in the background: no poll here, which could swallow a prefilled record.
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    sys.stdout.write("READY\n")
    sys.stdout.flush()


async def _warm_up(producer: AIOKafkaProducer, topic: str, size: int, count: int) -> None:
    """`count` records with t0 `-`, delivered; then READY to the parent and wait for its line on stdin."""
    if not count:
        return
    futures = [
        await producer.send(topic, value=_value(size, i), key=uuid.uuid4().hex.encode(), headers=[("t0", b"-")])
        for i in range(count)
    ]
    await asyncio.gather(*futures)
    await wait_for_go()


async def wait_for_go() -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def source(args: argparse.Namespace) -> dict[str, Any]:
    producer = new_producer(_settings(args.bootstrap, "chain-source"))
    await producer.start()
    # The topic's metadata before the clock starts: else the first records' t0 includes its fetch.
    await producer.partitions_for(args.out)
    await _warm_up(producer, args.out, args.size, args.warm)
    futures = []
    try:
        start = time.time() + 0.2
        for i in range(args.n):
            due = start + i / args.rate if args.rate else time.time()
            if args.rate:
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            key = uuid.uuid4().hex.encode()
            futures.append(
                await producer.send(args.out, value=_value(args.size, i), key=key, headers=[("t0", repr(due).encode())])
            )
        await asyncio.gather(*futures)
        done = time.time()
    finally:
        await producer.stop()
    return {"sent": len(futures), "start": start, "done": done}


async def forward(args: argparse.Namespace) -> dict[str, Any]:
    settings = _settings(args.bootstrap, args.group)
    consumer = new_consumer(settings, [args.input])
    producer = new_producer(settings)
    await consumer.start()
    await producer.start()
    await _ready(consumer)
    forwarded = 0
    try:
        while forwarded < args.n:
            batches = await consumer.getmany(timeout_ms=200, max_records=settings.consumer_batch_size)
            futures = []
            for records in batches.values():
                for record in records:
                    value = _value(args.size, forwarded) if args.size else record.value
                    futures.append(
                        await producer.send(args.out, value=value, key=record.key, headers=list(record.headers))
                    )
                    forwarded += 1
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items() if records})
    finally:
        await producer.stop()
        await consumer.stop()
    return {"forwarded": forwarded}


async def observe(args: argparse.Namespace) -> dict[str, Any]:
    # No group and a short fetch wait: the observer sees each record as soon as the broker has it.
    consumer = AIOKafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    await _ready(consumer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    seen = 0
    out = sys.stdout
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            now = time.time()
            lines = []
            for records in batches.values():
                for record in records:
                    t0 = dict(record.headers).get("t0", b"-").decode()
                    key = record.key.decode() if record.key else "-"
                    lines.append(f"{key} {now!r} {t0}\n")
            if lines:
                seen += len(lines)
                out.write("".join(lines))
                out.flush()
    finally:
        await consumer.stop()
    return {"observed": seen}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chain")
    parser.add_argument("role", choices=["source", "forward", "observe", "webhook"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--in", dest="input")
    parser.add_argument("--out")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--group", default="chain")
    parser.add_argument("--warm", type=int, default=0, help="a source's warm-up records (t0 `-`) before READY")
    parser.add_argument("--durable", help="a folder: the durable floor's stage (bench.durable) with its SQLite file")
    parser.add_argument("--url", help="the webhook stage's receiver URL")
    args = parser.parse_args()
    roles = {"source": source, "forward": forward, "observe": observe}
    if args.durable:
        from bench import durable  # imports this module: only when asked

        roles = {"source": durable.source, "forward": durable.forward, "webhook": durable.webhook}
    role = roles[args.role]
    result = uvloop.run(role(args))
    sys.stdout.write("RESULT " + orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
    os._exit(0)  # aiokafka can leave a thread or task behind at exit; the result is written


if __name__ == "__main__":
    main()


# -- the parent's side: start stages, read what they print ---------------------------------------------------------


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """Topics for bare stages, with the partition count the services use (brokers here refuse auto-creation)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
            while True:
                described = await admin.describe_topics(names)
                if all(t.get("partitions") and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
                    return
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    asyncio.run(create())


class Stage:
    """One `python -m bench.chain` process; `arrivals` fills from an observer's output as records come."""

    def __init__(self, *args: str) -> None:
        import subprocess
        import threading

        from tests.support.stack import ROOT

        self.arrivals: dict[str, tuple[float, float | None]] = {}
        self.result: dict[str, Any] | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.chain", *args],
            cwd=ROOT,
            # This tree first, then whatever the parent was given (a worktree's services for an A/B).
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("RESULT "):
                self.result = orjson.loads(line[7:])
            elif line.startswith("READY"):
                self._ready.set()
            else:
                key, arrival, t0 = line.split()
                with self._lock:
                    self.arrivals.setdefault(key, (float(arrival), None if t0 == "-" else float(t0)))
        self._ready.set()

    def wait_ready(self, timeout: float = 60) -> None:
        if not self._ready.wait(timeout) or self.process.poll() not in (None, 0):
            raise RuntimeError(f"bench.chain stage not ready: {self.process.args}")

    def go(self) -> None:
        """Let a warmed source (READY) send its measured records."""
        assert self.process.stdin is not None
        self.process.stdin.write("GO\n")
        self.process.stdin.flush()

    def count(self, keys: set[str] | None = None) -> int:
        with self._lock:
            return len(self.arrivals) if keys is None else sum(1 for k in keys if k in self.arrivals)

    def wait_count(self, n: int, timeout: float, keys: set[str] | None = None) -> bool:
        """Poll (with a deadline) until n records, or n of `keys`, have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(keys) >= n:
                return True
            time.sleep(0.05)
        return False

    def finish(self, timeout: float = 120) -> dict[str, Any]:
        """Wait for a stage that ends by itself (source, forward)."""
        self.process.wait(timeout)
        self._reader.join(5)
        return self.result or {}

    def stop(self) -> None:
        """SIGTERM an observer (or a stuck stage) and wait."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except Exception:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
