"""A restarted routing process imports only what serving needs: the libraries of rare or later paths load on use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

STARTUP = "import routing.app, routing.timers, routing.usecases.clock"


def _loaded_after_startup(*modules: str, **env: str) -> dict[str, bool]:
    code = f"import json, sys\n{STARTUP}\nprint(json.dumps({{m: m in sys.modules for m in {list(modules)!r}}}))"
    environ = {k: v for k, v in os.environ.items() if k != "HANDOFF_LOG_FORMAT"} | env
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True)
    loaded: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_a_fresh_routing_process_has_not_imported_aiohttp_rich_or_click() -> None:
    loaded = _loaded_after_startup("aiohttp", "rich", "click", "structlog", "httpx")
    assert loaded == {"aiohttp": False, "rich": False, "click": False, "structlog": True, "httpx": True}


def test_the_console_log_format_keeps_structlog_pretty_tracebacks() -> None:
    assert _loaded_after_startup("rich", HANDOFF_LOG_FORMAT="console") == {"rich": True}


def test_fastapi_loads_without_email_validator_and_a_later_import_finds_it() -> None:
    loaded = _loaded_after_startup("fastapi", "email_validator")
    assert loaded == {"fastapi": True, "email_validator": False}
    code = f"{STARTUP}\nimport email_validator\nprint(email_validator.validate_email.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "validate_email"
