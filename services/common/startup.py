"""Imported first by a service package (before FastAPI, SQLAlchemy, structlog): what a restarted process should not
pay for while it imports.

The collector runs with the thresholds `tune_gc` (common.runtime) sets once start-up is done: at the default gen-0
threshold (700) the ~2 M objects that importing routing allocates trigger ~300 collections, which rescan the
modules, classes and tables already loaded (0.24 s of CPU measured; 0.11 s at these thresholds). The collector is
not turned off, so a process that never reaches `tune_gc` (a test run, a CLI) still collects cycles. Ingest and
scoring import it first too (their imports: 0.91x and 0.80x the CPU with the default thresholds, measured A B A B).
"""

from __future__ import annotations

import gc
import sys

GC_THRESHOLDS = (50_000, 20, 20)  # (gen 0 allocations, gen 0 runs per gen 1 run, gen 1 runs per gen 2 run)

gc.set_threshold(*GC_THRESHOLDS)

import common.logging_import  # noqa: E402, F401  # structlog without rich (it imports nothing else of common)


def _import_fastapi() -> None:
    """FastAPI without `email_validator`: its OpenAPI models import it (~0.04 s of CPU, compiling the RFC's
    regular expressions) only to type the document's `contact.email`, which no service sets. Hidden while FastAPI
    loads, the field is a plain string; the documents are the same, and a later `import email_validator` (ingest
    validates lead emails with it) finds the real package."""
    if "fastapi" in sys.modules or "email_validator" in sys.modules:
        return
    sys.modules["email_validator"] = None  # type: ignore[assignment]  # None in sys.modules: an ImportError
    try:
        import fastapi  # noqa: F401
    finally:
        del sys.modules["email_validator"]


_import_fastapi()
