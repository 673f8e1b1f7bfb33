"""`make run`: the broker and the three services on embedded SQLite stores, demo reps, one Ctrl-C to stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = Path(sys.executable)
SERVICES = {"ingest": 8001, "scoring": 8002, "routing": 8003}


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


STOP_GRACE_S = 5.0


def stop_children(children: dict[str, subprocess.Popen[bytes]], grace_s: float) -> list[str]:
    """SIGTERM every child, then SIGKILL the process group of any still running when one shared grace period ends.

    A service stuck in CPU work (or in a blocking call) never gets to run its SIGTERM handler, so waiting on it
    forever would leave `make run` hanging and the process behind. One deadline for all children, not one each,
    keeps Ctrl-C to a few seconds. Returns the names of the children that had to be killed.
    """
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    killed = []
    for name, child in children.items():
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(name)
            # Each child leads its own session (start_new_session), so its group holds anything it started too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return killed


def service_env(environ: dict[str, str]) -> dict[str, str]:
    """The services' environment for a local run: development said explicitly (the services default to production)."""
    from common.settings import DEV_ADMIN_TOKEN

    env = dict(environ)
    env.setdefault("HANDOFF_ENV", "development")
    env.setdefault("HANDOFF_DATA_DIR", str(ROOT / ".data"))
    env.setdefault("HANDOFF_LOG_FORMAT", "console")
    env.setdefault("HANDOFF_SEED_FILE", str(ROOT / "services/routing/demo_reps.yaml"))
    env.setdefault("HANDOFF_ADMIN_TOKEN", DEV_ADMIN_TOKEN)
    return env


def main() -> int:
    from common.settings import DEV_ADMIN_TOKEN

    env = service_env(dict(os.environ))
    token = env["HANDOFF_ADMIN_TOKEN"]
    kafka_was_running = subprocess.run([ROOT / "scripts/kafka.sh", "status"], capture_output=True).returncode == 0
    subprocess.run([ROOT / "scripts/kafka.sh", "start"], check=True)

    logs = Path(env["HANDOFF_DATA_DIR"]) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    children: dict[str, subprocess.Popen[bytes]] = {}
    for name, port in SERVICES.items():
        log = (logs / f"{name}.log").open("ab")
        children[name] = subprocess.Popen(
            [
                PY,
                "-m",
                # routing: its SLA timers in service before its HTTP side loads (routing.serve, as in its image)
                *(["routing.serve"] if name == "routing" else ["uvicorn", f"{name}.app:create_app", "--factory"]),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
        )

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        deadline = time.monotonic() + 90
        while not stopping and not all(_ready(p) for p in SERVICES.values()):
            for name, child in children.items():
                if child.poll() is not None:
                    print(
                        f"{name} exited with {child.returncode}; see {logs / (name + '.log')}",
                        file=sys.stderr,
                    )
                    return 1
            if time.monotonic() > deadline:
                print(f"services did not become ready; see {logs}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        if not stopping:
            print(
                f"""
Handoff is running (logs in {logs}).

  ingest   http://127.0.0.1:8001   API docs http://127.0.0.1:8001/docs
  scoring  http://127.0.0.1:8002   API docs http://127.0.0.1:8002/docs
  routing  http://127.0.0.1:8003   API docs http://127.0.0.1:8003/docs
  Kafka    127.0.0.1:{env.get("KAFKA_PORT", "9092")}

Admin token: {token}
{"(the published development token: set HANDOFF_ADMIN_TOKEN for anything real)" if token == DEV_ADMIN_TOKEN else ""}
Post a lead:
  curl -s -X POST http://127.0.0.1:8001/v1/leads -H 'Authorization: Bearer {token}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"email":"ada@acme.com","first_name":"Ada","last_name":"Lovelace","company":"Acme",
            "job_title":"VP Sales","country":"DE","form_id":"demo-request",
            "message":"We would like a demo and pricing this quarter"}}'
See where it went:
  curl -s http://127.0.0.1:8003/v1/leads/<lead_id> -H 'Authorization: Bearer {token}'

Ctrl-C stops everything.""",
                flush=True,
            )
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"{name} exited with {child.returncode}; stopping", file=sys.stderr)
                    stopping = True
            time.sleep(0.5)
    finally:
        print("\nstopping...", flush=True)
        for name in stop_children(children, grace_s=STOP_GRACE_S):
            print(f"{name} did not stop within {STOP_GRACE_S:.0f} s; killed", file=sys.stderr)
        if not kafka_was_running:
            subprocess.run([ROOT / "scripts/kafka.sh", "stop"], check=False)
        print("stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
