"""The one loop of every background worker (relays, senders, fetchers, timers, housekeeping): a round of work,
then a wait that a commit can cut short and a stop always does."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# Per engine, the workers its commits hand work to (the outbox relay; any worker with an `idle` asyncio.Event).
_SHARERS: weakref.WeakKeyDictionary[Any, weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()


def share_loop(engine: Any, worker: Any) -> None:
    """Have the consumers on `engine` (an AsyncEngine) leave `worker` the event loop between polls while its `idle`
    event is clear: the worker clears it when a commit hands it work and sets it once that work is done."""
    _SHARERS.setdefault(engine.sync_engine, weakref.WeakSet()).add(worker)


async def hand_off(engine: Any, within_s: float) -> bool:
    """Give the workers registered on `engine` the loop until they are done with what commits handed them, for at
    most `within_s`: a consumer calls it between polls. SQLite statements run on the event loop without yielding,
    so a consumer busy with poll after poll would otherwise leave them a turn only now and then, and each step of,
    e.g., the relay's round (its produce request, the broker's answer, the acknowledgements) waited a whole poll's
    apply: under load its events lagged seconds behind. An idle worker costs nothing. True when one was busy (the
    loop was given up); False when none was (nothing awaited)."""
    workers = _SHARERS.get(engine.sync_engine)
    busy = [worker.idle for worker in list(workers or ()) if not worker.idle.is_set()]
    if not busy:
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within_s):
            for idle in busy:
                await idle.wait()
    return True


async def sleep_or_wake(wake: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`, less if `wake` is set meanwhile (new work, or a stop); True when woken early.
    The event is cleared afterwards, so one wake-up ends one sleep."""
    woken = False
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the wait in a task of its own, which costs a
    # woken worker two more turns of the event loop before it runs (turns a busy consumer may not give it soon).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            woken = await wake.wait()
    wake.clear()
    return woken


async def poll_until(
    stop: asyncio.Event,
    work: Callable[[], Awaitable[bool | float]],
    *,
    interval_s: float,
    name: str,
    wake: asyncio.Event | None = None,
    error_pause_s: float | None = None,
) -> None:
    """The one loop of every background worker: run `work` rounds until `stop` is set.

    A round answers True when more is waiting (the next round starts at once), False to wait `interval_s`, or a
    number of seconds to wait instead (a timer's next due time, a backoff). Setting `wake` ends a wait early (a
    commit queued new work); whoever sets `stop` sets `wake` too, so stopping never waits out an interval. A
    failed round is logged and the loop waits `error_pause_s` (default: the interval) before the next: a worker
    must outlive a store or broker outage.
    """
    wake = wake or stop
    while not stop.is_set():
        try:
            answer = await work()
        except Exception:
            log.exception("periodic_job_failed", job=name)
            answer = interval_s if error_pause_s is None else error_pause_s
        if answer is True or stop.is_set():
            continue
        pause = interval_s if answer is False else float(answer)
        if pause <= 0:
            continue
        if wake is stop:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await stop.wait()  # never cleared: the stop stays set
        else:
            await sleep_or_wake(wake, pause)
