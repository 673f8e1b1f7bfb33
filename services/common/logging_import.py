"""Import structlog without `rich` unless the console log format is chosen: imported first by a service package.

structlog imports `rich` at import time whenever it is installed (a dev tool brings it here) for its console
renderer's tracebacks, ~0.1 s of a routing restart's CPU that the JSON format never uses; httpx does the same (and
imports click) for its command line. With both hidden while they load, structlog and httpx fall back to what they do
without them (click or rich imported later, by a dev tool or a test, are the real packages). Exceptions are
formatted by our own processor chain (common.logging) either way, so the JSON and console lines read the same.
"""

from __future__ import annotations

import os
import sys


def import_structlog(log_format: str | None = None) -> None:
    """Load structlog (and httpx) once; `rich` stays out unless the log format is `console`."""
    fmt = log_format or os.environ.get("HANDOFF_LOG_FORMAT", "json")
    if "structlog" in sys.modules or fmt.lower() == "console":
        return
    hidden = [name for name in ("rich", "click") if name not in sys.modules]  # click: httpx's command line only
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # None in sys.modules: `import name` is an ImportError
    try:
        import httpx  # noqa: F401
        import structlog  # noqa: F401
    finally:
        for name in hidden:
            del sys.modules[name]  # a later import (a dev tool, a test, uvicorn's CLI) finds the real package


import_structlog()
