"""The one loop of every background worker (relays, senders, fetchers, timers, housekeeping): a round of work,
then a wait that a commit can cut short and a stop always does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


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
