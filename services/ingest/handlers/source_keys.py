"""Which source a key belongs to, remembered for a bounded time, so POST /v1/leads does not look it up every time.

A source's secret API key (kept by its hash) and its publishable key are looked up in the store once, then trusted
from memory for at most `ttl_s` seconds (HANDOFF_SOURCE_CACHE_TTL_S). That is the revocation bound: a key rotated,
a source disabled or its origins changed through another process stop working here within `ttl_s`. A change made
through this process (any session of its database) makes its cache forget at the change's commit: here, at once.

Unknown keys are not remembered: a new source's key works at once, and guessing keys fills no memory (failed
authentications are limited per client address instead). Concurrent misses for one key share one look-up.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import object_session

from common.db import Database, on_commit
from ingest.domain import hash_api_key
from ingest.handlers import leads as lead_cases
from ingest.store import Source

_Lookup = Callable[[AsyncSession, str], Awaitable[Source | None]]

_CACHES: weakref.WeakSet[SourceKeys] = weakref.WeakSet()


class SourceKeys:
    """The enabled source of an API key or a publishable key, from memory when looked up less than `ttl_s` ago.

    The sources handed out are detached rows shared by every request that asks within the bound: read them, never
    change them (a change goes through a session of its own, which makes this cache forget).
    """

    def __init__(
        self,
        db: Database,
        ttl_s: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Source]] = {}
        self._pending: dict[tuple[str, str], asyncio.Task[Source | None]] = {}
        self._generation = 0  # moved by forget(): a look-up that began before it does not store what it read
        _CACHES.add(self)

    async def by_api_key(self, api_key: str) -> Source | None:
        """The enabled source of a secret API key (looked up by its hash; the key itself is not kept)."""
        return await self._source(("api", hash_api_key(api_key)), api_key, lead_cases.source_by_api_key)

    def remembered_api_key(self, api_key: str) -> Source | None:
        """`by_api_key`'s answer when it is remembered and fresh, without a coroutine (the usual request); None
        when it must be looked up (then call `by_api_key`)."""
        if self._ttl_s <= 0:
            return None
        entry = self._entries.get(("api", hash_api_key(api_key)))
        return entry[1] if entry is not None and entry[0] > self._clock() else None

    async def by_publishable_key(self, key: str) -> Source | None:
        """The enabled source of a publishable key."""
        return await self._source(("publishable", key), key, lead_cases.source_by_publishable_key)

    def forget(self) -> None:
        """Drop everything remembered, and whatever look-ups now in flight would store."""
        self._generation += 1
        self._entries.clear()
        self._pending.clear()

    async def _source(self, slot: tuple[str, str], key: str, lookup: _Lookup) -> Source | None:
        if self._ttl_s <= 0:
            return await self._load(key, lookup)
        entry = self._entries.get(slot)
        if entry is not None:
            if entry[0] > self._clock():
                return entry[1]
            del self._entries[slot]
        task = self._pending.get(slot)
        if task is None:
            task = asyncio.ensure_future(self._remember(slot, key, lookup))
            self._pending[slot] = task
        # Shielded: a request that goes away (client gone) does not cancel the look-up others wait for.
        return await asyncio.shield(task)

    async def _remember(self, slot: tuple[str, str], key: str, lookup: _Lookup) -> Source | None:
        generation, started = self._generation, self._clock()
        try:
            source = await self._load(key, lookup)
        finally:
            if generation == self._generation:
                self._pending.pop(slot, None)
        if source is not None and generation == self._generation:
            # Counted from when the read began: a change committed after that is seen within `ttl_s` of its commit.
            self._entries[slot] = (started + self._ttl_s, source)
            while len(self._entries) > self._max_entries:
                del self._entries[next(iter(self._entries))]  # the oldest first
        return source

    async def _load(self, key: str, lookup: _Lookup) -> Source | None:
        async with self._db.read() as session:
            return await lookup(session, key)


@event.listens_for(Source, "after_update")
@event.listens_for(Source, "after_delete")
def _source_changed(_mapper: Any, connection: Any, target: Source) -> None:
    # Whoever changed the row (PATCH, rotate-key, rotate-secrets), the caches on that database forget at its commit.
    session = object_session(target)
    if session is None:
        return
    engine = connection.engine
    caches = [cache for cache in _CACHES if cache._db.engine.sync_engine is engine]

    def forget() -> None:
        for cache in caches:
            cache.forget()

    on_commit(session, forget)
