"""End-to-end fixtures: the three services as real processes on the real broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.stack import Stack

EVEN_SEED = """
teams:
  - {id: t, name: Test team, method: round_robin, hours: always, queue_sla_minutes: 60}
reps:
  - {id: r1, name: Rep One, email: r1@example.com, team: t, hours: always}
  - {id: r2, name: Rep Two, email: r2@example.com, team: t, hours: always}
  - {id: r3, name: Rep Three, email: r3@example.com, team: t, hours: always}
  - {id: r4, name: Rep Four, email: r4@example.com, team: t, hours: always}
"""

# Every lead, qualified or not, rotates over team t: the tests look at delivery, not at scoring.
EVEN_RULES = """
fallback_team: t
rules:
  - id: everyone
    description: Every lead rotates evenly over the test team.
    action: {team: t, method: round_robin}
"""


@pytest.fixture
def make_stack(kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**kwargs: object) -> Stack:
        kwargs.setdefault("seed", EVEN_SEED)
        kwargs.setdefault("rules", EVEN_RULES)
        bootstrap = str(kwargs.pop("bootstrap", kafka_bootstrap))
        stack = Stack(tmp_path / f"stack{len(stacks)}", bootstrap, **kwargs)  # type: ignore[arg-type]
        stack.tmp.mkdir(parents=True, exist_ok=True)
        stacks.append(stack)
        return stack

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for stack in stacks:
        stack.stop()
        if failed:
            for service in stack.services.values():
                print(f"----- {service.name} log tail -----\n{service.log_tail(60)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
