"""Moved: common.sqlprep's `run` and `fetch` (a statement compiled once per dialect and key, run at the driver with
plain values). Kept as names for callers not yet switched."""

from __future__ import annotations

from common.sqlprep import fetch as fetch
from common.sqlprep import run as run
