"""Handoff routing service."""

import common.logging_import  # noqa: F401  # first of all: structlog without rich (start-up CPU), see its docstring
