"""SQLite's COMMIT thread: the caller's await ends once the call returned, or raises what it raised."""

import asyncio
import functools
import threading

import pytest

from common.db_commit import Committer


async def test_a_call_runs_off_the_loop_and_its_error_reaches_the_caller() -> None:
    committer = Committer()
    ran_on: list[str] = []
    await committer.run(lambda: ran_on.append(threading.current_thread().name))
    assert ran_on == ["sqlite-commit"]

    def fails() -> None:
        raise RuntimeError("disk I/O error")

    with pytest.raises(RuntimeError, match="disk I/O error"):
        await committer.run(fails)
    await committer.run(lambda: ran_on.append("after the error"))
    assert ran_on[-1] == "after the error"


async def test_an_idle_thread_ends_and_the_next_call_starts_another() -> None:
    committer = Committer()
    committer.IDLE_S = 0.05
    order: list[int] = []
    await asyncio.gather(*(committer.run(functools.partial(order.append, i)) for i in range(20)))
    assert order == list(range(20))  # one thread: calls run in the order they were handed over
    for _ in range(200):
        if not committer._running:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the idle commit thread did not end")
    await committer.run(lambda: order.append(20))
    assert order[-1] == 20
