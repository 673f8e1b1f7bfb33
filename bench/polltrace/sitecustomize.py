"""Loaded by every service process that `bench.polltrace` starts (this folder is first on their PYTHONPATH): each
consumer poll's wall time split into the wait for SQLite's writer lock, the transaction's body and its commit, with
the loop thread's CPU, one JSON line per poll (and per other write transaction) under $POLLTRACE_OUT.

A diagnostic, never imported by the services themselves: it replaces ConsumerLoop._process and
Database.transaction with timed copies once both modules are imported."""

import contextlib
import contextvars
import json
import os
import sys
import time

if os.environ.get("POLLTRACE_OUT"):
    import builtins

    if os.environ.get("POLLTRACE_SWITCH_S"):  # an experiment: the GIL's switch interval (CPython's default 5 ms)
        sys.setswitchinterval(float(os.environ["POLLTRACE_SWITCH_S"]))

    _in_poll = contextvars.ContextVar("in_poll", default=None)
    _out = open(os.path.join(os.environ["POLLTRACE_OUT"], f"{os.getpid()}.jsonl"), "a", buffering=1)  # noqa: SIM115 - open for the process's life

    _committing: list = [None]  # the poll whose commit runs now (SQLite's writers take turns: one at a time)

    def _patch():
        from common import consumer as cmod
        from common import db as dbmod
        from common import db_commit

        orig_process = cmod.ConsumerLoop._process
        orig_transaction = dbmod.Database.transaction

        async def _process(self, consumer, batches):
            rec = {
                "t": time.time(),
                "n": sum(len(r) for r in batches.values()),
                "lock": 0.0,
                "body": 0.0,
                "commit": 0.0,
                "c_queue": 0.0,
                "c_sql": 0.0,
                "c_back": 0.0,
                "txns": 0,
                "svc": self._settings.service_name,
            }
            token = _in_poll.set(rec)
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return await orig_process(self, consumer, batches)
            finally:
                rec["wall"] = time.perf_counter() - w0
                rec["cpu"] = time.thread_time() - c0
                _in_poll.reset(token)
                _out.write(json.dumps(rec) + "\n")

        cmod.ConsumerLoop._process = _process

        @contextlib.asynccontextmanager
        async def transaction(self):
            # Around the service's own transaction (not a copy of it): the time to its yield is the writer lock's
            # wait, the time after the block its commit, listeners and close.
            rec = _in_poll.get()
            t0 = time.perf_counter()
            try:
                async with orig_transaction(self) as session:
                    t1 = time.perf_counter()
                    yield session
                    t2 = time.perf_counter()
                    _committing[0] = rec
            finally:
                _committing[0] = None
            t3 = time.perf_counter()
            if rec is not None:
                rec["lock"] += t1 - t0
                rec["body"] += t2 - t1
                rec["commit"] += t3 - t2
                rec["txns"] += 1
            else:
                other = {"other": True, "t": time.time(), "lock": t1 - t0, "body": t2 - t1, "commit": t3 - t2}
                _out.write(json.dumps(other) + "\n")

        dbmod.Database.transaction = transaction

        if os.environ.get("POLLTRACE_AUTOCHECKPOINT"):  # an experiment: SQLite's WAL auto-checkpoint, in pages
            from sqlalchemy import event

            orig_configure = dbmod._configure_sqlite

            def configure(engine, *args, **kwargs):
                orig_configure(engine, *args, **kwargs)

                @event.listens_for(engine.sync_engine, "connect")
                def _pages(dbapi_connection, _record):
                    dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={int(os.environ['POLLTRACE_AUTOCHECKPOINT'])}")

            dbmod._configure_sqlite = configure

        orig_run = db_commit.Committer.run

        def run(self, call):
            # The COMMIT's three parts: waiting for the commit thread, the COMMIT itself (the fsync), and from its
            # end until the event loop runs the awaiting coroutine again.
            rec, submitted, ended = _committing[0], time.perf_counter(), [0.0]

            def timed():
                started = time.perf_counter()
                try:
                    call()
                finally:
                    ended[0] = time.perf_counter()
                    if rec is not None:
                        rec["c_queue"] += started - submitted
                        rec["c_sql"] += ended[0] - started

            future = orig_run(self, timed)
            if rec is not None:
                future.add_done_callback(
                    lambda _f: rec.__setitem__("c_back", rec["c_back"] + time.perf_counter() - ended[0])
                )
            return future

        db_commit.Committer.run = run

    _orig_import = builtins.__import__
    _done = [False]

    def _hook(name, *a, **k):
        mod = _orig_import(name, *a, **k)
        if (
            not _done[0]
            and hasattr(sys.modules.get("common.consumer"), "ConsumerLoop")
            and hasattr(sys.modules.get("common.db"), "_close")
        ):
            _done[0] = True
            try:
                _patch()
            except Exception as exc:
                print("polltrace: patch failed", exc, file=sys.stderr)
        return mod

    builtins.__import__ = _hook
