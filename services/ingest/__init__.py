"""Handoff ingest service."""

import common.startup  # noqa: F401  # first of all: start-up imports made cheaper, see its docstring
