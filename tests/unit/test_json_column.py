"""A JSON column's text: orjson's fast mode where it can, the same bytes as the non-text-key mode everywhere."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from common.db_types import _json_default, json_column_dumps, json_column_loads


class Kind(enum.Enum):
    A = "a"


@pytest.mark.parametrize(
    "value",
    [
        {"email": "a@example.org", "custom": {"n": 1.5, "b": True, "x": None}, "quality": {"flags": [], "raw": {}}},
        {"submitted_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)},
        {"quality": {"raw": {"custom.1": [1, {"deep": "é"}]}}},
        {1: "a key that is no text", "nested": {2.5: [None]}},
        {Kind.A: 1},
        {"tags": {"b", "a"}},
        [{"x": {3: "int key deep in a list"}}],
    ],
)
def test_a_json_column_is_written_as_the_non_text_key_mode_writes_it(value: Any) -> None:
    reference = orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)
    assert json_column_dumps(value) == reference.decode()


def test_a_set_is_written_sorted_and_read_back_as_a_list() -> None:
    assert json_column_loads(json_column_dumps({"tags": {"b", "a"}})) == {"tags": ["a", "b"]}


def test_a_value_json_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError):
        json_column_dumps({"x": object()})
