"""The router's compiled-rules cache: simulate and backtest candidates cannot grow it without bound."""

from __future__ import annotations

import pytest
from tests.support.routing import routing_settings

from routing.handlers import COMPILED_RULES, Router

pytestmark = pytest.mark.unit


def _candidate(n: int) -> str:
    return f"fallback_team: sales\nrules:\n  - {{id: r{n}, when: {{lead.country: DE}}, action: {{rep: r{n}}}}}\n"


def test_each_new_candidate_evicts_the_least_recently_used_beyond_the_bound() -> None:
    router = Router(routing_settings("sqlite+aiosqlite:///unused.db"))
    active = router.parse_rules(_candidate(0))
    for n in range(1, 5 * COMPILED_RULES):
        router.parse_rules(_candidate(n))
        assert router.parse_rules(_candidate(0)) is active  # in use all along: never evicted
        assert len(router._rules) <= COMPILED_RULES
    recent = router.parse_rules(_candidate(5 * COMPILED_RULES - 1))
    assert router.parse_rules(_candidate(5 * COMPILED_RULES - 1)) is recent  # compiled once while kept
    evicted = _candidate(1)
    assert router.parse_rules(evicted).rules[0].id == "r1"  # an evicted candidate compiles again, the same
