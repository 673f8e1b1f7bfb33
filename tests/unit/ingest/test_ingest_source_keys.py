"""The source-key cache on a fake store: how often the store is asked, and what is never remembered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from common.db import Database
from ingest.handlers.source_keys import SourceKeys
from ingest.store import Source

pytestmark = pytest.mark.unit


class _Result:
    def __init__(self, source: Source | None) -> None:
        self._source = source

    def scalar_one_or_none(self) -> Source | None:
        return self._source


class FakeStore:
    """A Database whose read sessions answer every key look-up with `source`, after `gate` opens."""

    def __init__(self, source: Source | None) -> None:
        self.source = source
        self.lookups = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.engine = SimpleNamespace(sync_engine=object())

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Any]:
        yield self

    async def execute(self, _statement: Any) -> _Result:
        self.lookups += 1
        answer = self.source
        await self.gate.wait()
        return _Result(answer)


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _store_asked(store: FakeStore) -> None:
    """Let the event loop run until the store has been asked (the look-up is then in flight)."""
    for _ in range(1000):
        if store.lookups:
            return
        await asyncio.sleep(0)
    raise AssertionError("the store was never asked")


def _source(enabled: bool = True) -> Source:
    return Source(id="s1", kind="web", name="site", enabled=enabled, allowed_origins=[])


def _keys(store: FakeStore, ttl_s: float = 5.0, ticks: Ticks | None = None) -> SourceKeys:
    return SourceKeys(cast(Database, store), ttl_s, clock=ticks or Ticks())


async def test_concurrent_requests_with_one_key_ask_the_store_once() -> None:
    store = FakeStore(_source())
    keys = _keys(store)
    store.gate.clear()
    waiting = [asyncio.ensure_future(keys.by_api_key("hk_live_x")) for _ in range(32)]
    await _store_asked(store)
    for _ in range(10):
        await asyncio.sleep(0)  # every request has arrived at the look-up
    store.gate.set()
    found = await asyncio.gather(*waiting)
    assert {s.id for s in found if s} == {"s1"} and store.lookups == 1
    assert (await keys.by_api_key("hk_live_x")) is found[0] and store.lookups == 1


async def test_a_remembered_key_is_asked_again_once_the_bound_has_passed_since_the_read_began() -> None:
    store, ticks = FakeStore(_source()), Ticks()
    keys = _keys(store, ttl_s=5.0, ticks=ticks)
    await keys.by_api_key("hk_live_x")
    ticks.now += 4.999
    await keys.by_api_key("hk_live_x")
    assert store.lookups == 1
    store.source = None  # revoked in the store meanwhile
    ticks.now += 0.001
    assert await keys.by_api_key("hk_live_x") is None and store.lookups == 2


async def test_unknown_and_disabled_keys_are_not_remembered() -> None:
    store = FakeStore(None)
    keys = _keys(store)
    assert await keys.by_api_key("hk_live_guess") is None
    assert await keys.by_publishable_key("hk_pub_guess") is None
    store.source = _source(enabled=False)
    assert await keys.by_api_key("hk_live_guess") is None  # the use case refuses a disabled source
    store.source = _source()
    assert await keys.by_api_key("hk_live_guess") is not None
    assert store.lookups == 4


async def test_a_look_up_in_flight_when_the_cache_forgets_is_answered_but_not_remembered() -> None:
    store = FakeStore(_source())
    keys = _keys(store)
    store.gate.clear()
    in_flight = asyncio.ensure_future(keys.by_api_key("hk_live_x"))
    await _store_asked(store)
    keys.forget()  # a change committed while the store was being read: what it read may be the old row
    store.gate.set()
    assert (await in_flight) is not None
    await keys.by_api_key("hk_live_x")
    assert store.lookups == 2


async def test_a_bound_of_zero_asks_the_store_every_time() -> None:
    store = FakeStore(_source())
    keys = _keys(store, ttl_s=0)
    for _ in range(3):
        await keys.by_api_key("hk_live_x")
    assert store.lookups == 3


async def test_a_request_that_goes_away_does_not_cancel_the_look_up_others_wait_for() -> None:
    store = FakeStore(_source())
    keys = _keys(store)
    store.gate.clear()
    leaver = asyncio.ensure_future(keys.by_api_key("hk_live_x"))
    stayer = asyncio.ensure_future(keys.by_api_key("hk_live_x"))
    await _store_asked(store)
    leaver.cancel()
    store.gate.set()
    assert (await stayer) is not None and store.lookups == 1


async def test_the_oldest_entries_go_first_past_the_size_limit() -> None:
    store = FakeStore(_source())
    keys = SourceKeys(cast(Database, store), 5.0, max_entries=2, clock=Ticks())
    for key in ("a", "b", "c"):
        await keys.by_api_key(key)
    await keys.by_api_key("c")
    await keys.by_api_key("b")
    assert store.lookups == 3
    await keys.by_api_key("a")
    assert store.lookups == 4
