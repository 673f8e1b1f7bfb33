"""`make run`'s Ctrl-C: every service stops, including one too busy to handle SIGTERM."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from types import ModuleType

import pytest

from tests.support.stack import ROOT


def _run_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("handoff_run_script", ROOT / "scripts/run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spawn(code: str) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    time.sleep(0.3)  # let the child install its signal disposition before we signal it
    return child


def test_a_child_stuck_in_cpu_work_is_killed_after_the_grace_period_and_a_polite_one_just_stops() -> None:
    run = _run_script()
    # A child that ignores SIGTERM and spins, like a service stuck in CPU work that never reaches its handler,
    # and a grandchild of it, which must not outlive it either.
    stuck = _spawn(
        "import signal, subprocess, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import signal\\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
        "while True: pass'])\n"
        "while True: pass\n"
    )
    polite = _spawn("import time\nwhile True: time.sleep(0.1)\n")
    grandchildren = subprocess.run(["pgrep", "-P", str(stuck.pid)], capture_output=True, text=True).stdout.split()

    killed = run.stop_children({"stuck": stuck, "polite": polite}, grace_s=1.0)

    assert killed == ["stuck"]
    assert stuck.poll() is not None and polite.poll() is not None
    assert polite.returncode == -15  # stopped by SIGTERM, not killed
    for pid in grandchildren:
        deadline = time.monotonic() + 5
        while subprocess.run(["kill", "-0", pid], capture_output=True).returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert subprocess.run(["kill", "-0", pid], capture_output=True).returncode != 0, "grandchild left running"


def test_make_run_says_development_so_the_services_start_on_the_development_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from common.settings import DEV_ADMIN_TOKEN
    from ingest.settings import IngestSettings

    # An operator's shell with nothing set: the services alone would be in production and refuse to start.
    shell = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env = _run_script().service_env(shell)
    assert env["HANDOFF_ENV"] == "development"
    for name in list(os.environ):
        if name.startswith("HANDOFF_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("HANDOFF_"):
            monkeypatch.setenv(name, value)
    settings = IngestSettings()
    assert settings.env == "development"
    assert settings.admin_token.get_secret_value() == DEV_ADMIN_TOKEN
