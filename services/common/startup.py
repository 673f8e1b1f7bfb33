"""Imported first by a service package (before FastAPI, SQLAlchemy, structlog): what a restarted process should not
pay for while it imports.

The collector runs with the thresholds `tune_gc` (common.runtime) sets once start-up is done: at the default gen-0
threshold (700) the ~2 M objects that importing routing allocates trigger ~300 collections, which rescan the
modules, classes and tables already loaded (0.24 s of CPU measured; 0.11 s at these thresholds). The collector is
not turned off, so a process that never reaches `tune_gc` (a test run, a CLI) still collects cycles. Ingest and
scoring import it first too (their imports: 0.91x and 0.80x the CPU with the default thresholds, measured A B A B).

Some libraries import an optional package at import time for a feature no service uses; while such a library first
loads, that package is hidden (None in sys.modules: `import name` is an ImportError, which each of them handles),
then shown again, so a later `import name` (a dev tool, a test, ingest's email validation) finds the real package:
- structlog imports `rich` for its console renderer's tracebacks (~0.1 s; a dev tool installs it here) unless the
  console log format is chosen (HANDOFF_LOG_FORMAT=console): exceptions are formatted by common.logging's own
  processor chain either way, so the JSON and console lines read the same;
- httpx imports `click` and `rich` for its command line;
- FastAPI's OpenAPI models import `email_validator` (~0.04 s, compiling the RFC's regular expressions) only to type
  the document's `contact.email`, which no service sets: the field is a plain string, the documents are the same.
Nothing is imported here: each library is hidden-from only when (and if) something first imports it, so a process
that serves SLA timers before its HTTP side (routing.serve) loads FastAPI and httpx only when it needs them.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

GC_THRESHOLDS = (50_000, 20, 20)  # (gen 0 allocations, gen 0 runs per gen 1 run, gen 1 runs per gen 2 run)

gc.set_threshold(*GC_THRESHOLDS)


class HiddenWhileLoading:
    """A meta path finder: while a listed package first loads, the optional packages named for it are hidden.
    It finds nothing itself (the usual finders do); it wraps the found loader's `exec_module` once."""

    def __init__(self, rules: dict[str, tuple[str, ...]]) -> None:
        self.rules = {name: hidden for name, hidden in rules.items() if name not in sys.modules}

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        hidden = self.rules.pop(name, None)
        if hidden is None:
            return None
        if not self.rules and self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)  # the usual finders (this one has no rule left for `name`)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_hiding(module: ModuleType) -> None:
            names = [n for n in hidden if n not in sys.modules]
            for n in names:
                sys.modules[n] = None  # type: ignore[assignment]  # None in sys.modules: an ImportError
            try:
                exec_module(module)
            finally:
                for n in names:
                    if sys.modules.get(n, 0) is None:
                        del sys.modules[n]

        loader.exec_module = exec_hiding  # type: ignore[method-assign]
        return spec


def _rules() -> dict[str, tuple[str, ...]]:
    console = os.environ.get("HANDOFF_LOG_FORMAT", "json").lower() == "console"
    return {
        "structlog": () if console else ("rich",),
        "httpx": ("click",) if console else ("rich", "click"),
        "fastapi": ("email_validator",),
    }


if not any(isinstance(finder, HiddenWhileLoading) for finder in sys.meta_path):
    sys.meta_path.insert(0, HiddenWhileLoading(_rules()))
