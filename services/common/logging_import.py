"""Import structlog without `rich` unless the console log format is chosen: imported first by a service package.

structlog imports `rich` at import time whenever it is installed (a dev tool brings it here) for its console
renderer's tracebacks, ~0.1 s of a routing restart's CPU that the JSON format never uses; httpx does the same for
its command line. With `rich` hidden while they load, both fall back to what they do without it. Exceptions are
formatted by our own processor chain (common.logging) either way, so the JSON and console lines read the same.
"""

from __future__ import annotations

import os
import sys


def import_structlog(log_format: str | None = None) -> None:
    """Load structlog (and httpx) once; `rich` stays out unless the log format is `console`."""
    fmt = log_format or os.environ.get("HANDOFF_LOG_FORMAT", "json")
    if "structlog" in sys.modules or fmt.lower() == "console" or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # None in sys.modules: `import rich` is an ImportError
    try:
        import httpx  # noqa: F401
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]  # a later `import rich` (a dev tool, a test) finds the real package


import_structlog()
