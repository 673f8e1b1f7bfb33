"""SQLite's COMMIT (the wait for fsync) off the event loop, on one thread per engine (common.db's dialect)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class Committer:
    """One thread that runs an engine's COMMITs (the wait for fsync) off the event loop: a queue put and one loop
    wake-up per commit, where the default executor (`asyncio.to_thread`) adds a work item, two chained futures and a
    context copy, about twice the loop's CPU per commit. An idle thread ends; the next commit starts another.

    One thread per engine is enough: its writers commit one at a time (Database queues them), and on WAL a COMMIT
    never waits for another connection's lock (the writer took it at BEGIN IMMEDIATE)."""

    IDLE_S = 30.0

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], None], asyncio.AbstractEventLoop, asyncio.Future[None]]]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False
        # Called on the commit thread after each COMMIT that succeeded, once its caller was told (common.db_wal's
        # look at the WAL's length): whatever it costs, no transaction waits for it.
        self.after: Callable[[], None] | None = None

    def run(self, call: Callable[[], None]) -> asyncio.Future[None]:
        """`call()` on the commit thread; the future settles on the caller's loop once it returned or raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._queue.put((call, loop, future))
            if not self._running:
                self._running = True
                threading.Thread(target=self._work, name="sqlite-commit", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            try:
                call, loop, future = self._queue.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._running = False
                        return
                continue
            error: BaseException | None = None
            try:
                call()
            except BaseException as exc:  # handed to the waiting coroutine, raised there
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits for this commit
                loop.call_soon_threadsafe(_settle, future, error)
            if error is None and self.after is not None:
                try:
                    self.after()
                except Exception:  # the commit stands; a failed look at the WAL must not end the commit thread
                    log.exception("after_commit_failed")


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
