"""Moved: common.sqlprep.insert_many (one executemany of a table's rows at the driver). Kept as a name for callers
not yet switched."""

from __future__ import annotations

from common.sqlprep import insert_many as insert_many
