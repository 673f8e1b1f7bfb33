"""A battery of hostile requests against the three real services: every answer a 4xx (or 503 with Retry-After),
none a 5xx, a stack trace or a hang, and every service still ready afterwards."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.hostile import Target, run
from tests.support.stack import ADMIN_TOKEN, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def test_hostile_requests_get_no_5xx_no_trace_and_no_hang(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack().start()
    report = run(Target(stack["ingest"].url, stack["scoring"].url, stack["routing"].url, ADMIN_TOKEN))
    print(report.line())
    assert report.sent > 60
    assert report.findings == [], "\n".join(f"{f.name}: {f.what}" for f in report.findings)
