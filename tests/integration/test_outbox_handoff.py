"""The relay publishes what a writer just committed from memory, and deletes published rows inside the next writer's
transaction; a writer that rolls back gives its claimed deletes back (nothing it wrote is published).

A fake producer stands in for Kafka; the outbox is a real database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from common import outbox_deletes
from common.db import Database
from common.db_schema import upgrade_schema_async
from common.envelope import Event
from common.outbox import OutboxRelay, add_events, backlog
from routing.app import MIGRATIONS
from routing.store import Base, outbox
from tests.integration.test_outbox_pipelining import _FakeProducer, _settings
from tests.support.stack import wait_until_async

pytestmark = [pytest.mark.integration]


def _event(name: str) -> Event:
    return Event(type="thing.happened", source="/tests", subject=name, data={})


def _empty(db: Database) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await backlog(db, outbox) == 0

    return check


async def _write(db: Database, name: str) -> None:
    async with db.transaction() as session:
        await add_events(session, outbox, _settings(), [_event(name)], lambda _e: "things.v1")


async def test_published_rows_are_deleted_by_the_next_writers_commit_and_a_rollback_gives_them_back(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deleter never commits on its own here (until the relay stops): only writers' transactions delete.
    monkeypatch.setattr(outbox_deletes, "DELETE_LINGER_S", 3600)
    settings = _settings(outbox_poll_interval_s=3600)  # and no table read after the first: the hand-off brings rows
    db = Database(database_url)
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    delivered: list[bytes] = []
    relay = OutboxRelay(
        settings=settings, db=db, table=outbox, producer_factory=lambda: _FakeProducer([], delivered, set())
    )
    task = asyncio.create_task(relay.run())
    try:
        await _write(db, "first")
        await wait_until_async(lambda: delivered == [b"first"], timeout=20, what="first published")
        assert await backlog(db, outbox) == 1  # published, its delete waits for a writer

        with pytest.raises(RuntimeError):
            async with db.transaction() as session:
                await add_events(session, outbox, settings, [_event("rolled-back")], lambda _e: "things.v1")
                raise RuntimeError("the writer fails after writing its events")
        assert await backlog(db, outbox) == 1  # the claimed delete went back with the rollback

        await _write(db, "second")  # its commit carries the delete of "first"
        await wait_until_async(lambda: delivered == [b"first", b"second"], timeout=20, what="second published")
        async with db.read() as session:
            left = (await session.execute(outbox.select())).all()
        assert [row.key for row in left] == [b"second"]

        relay.published.hurry()  # what a stopping relay does: the deleter commits the rest without a writer
        await wait_until_async(_empty(db), timeout=20, what="the deleter emptied the outbox")
    finally:
        await relay.stop()
        await task
        await db.dispose()
    assert delivered == [b"first", b"second"]  # the rolled-back event never left


async def test_the_deleter_commits_none_of_its_own_while_writers_keep_taking_the_deletes(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each linger of the deleter is stood in for by a writer that commits within it, and waits until its row was
    # published (so a delete waits again when the linger ends). Three such lingers, then one that no writer takes.
    settings = _settings(outbox_poll_interval_s=3600)
    db = Database(database_url)
    await upgrade_schema_async(database_url, MIGRATIONS, Base.metadata)
    delivered: list[bytes] = []
    lingers: list[bool] = []  # per linger: whether a writer came within it
    real_sleep_or_wake = outbox_deletes.sleep_or_wake

    async def linger(wake: asyncio.Event, seconds: float) -> bool:
        if wake.is_set():
            return await real_sleep_or_wake(wake, seconds)
        lingers.append(len(lingers) < 3)
        if lingers[-1]:
            name = f"w{len(lingers)}"
            await _write(db, name)
            await wait_until_async(lambda: name.encode() in delivered, timeout=20, what=f"{name} published")
        return False  # the linger ran out

    monkeypatch.setattr(outbox_deletes, "sleep_or_wake", linger)
    relay = OutboxRelay(
        settings=settings, db=db, table=outbox, producer_factory=lambda: _FakeProducer([], delivered, set())
    )
    deleter_deletes: list[int] = []
    claim_into, delete = relay.published.claim_into, relay.published._delete

    async def noting_delete(session: object, seqs: list[int]) -> None:
        if not session.info.get("claiming"):  # type: ignore[attr-defined]
            deleter_deletes.append(len(lingers))
        await delete(session, seqs)  # type: ignore[arg-type]

    async def noting_claim(session: object) -> None:
        session.info["claiming"] = True  # type: ignore[attr-defined]
        try:
            await claim_into(session)  # type: ignore[arg-type]
        finally:
            session.info.pop("claiming")  # type: ignore[attr-defined]

    monkeypatch.setattr(relay.published, "_delete", noting_delete)
    monkeypatch.setattr(relay.published, "claim_into", noting_claim)
    task = asyncio.create_task(relay.run())
    try:
        await _write(db, "first")
        await wait_until_async(_empty(db), timeout=20, what="the deleter emptied the outbox")
    finally:
        await relay.stop()
        await task
        await db.dispose()
    assert delivered == [b"first", b"w1", b"w2", b"w3"]
    assert lingers == [True, True, True, False]
    assert deleter_deletes == [4]  # only once a linger passed without a writer
