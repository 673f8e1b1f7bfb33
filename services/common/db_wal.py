"""SQLite's WAL checkpoint off the commit path: a checkpointer thread per Database (common.db), on its own connection.

By default SQLite runs a checkpoint inside whichever COMMIT makes the WAL pass 1,000 pages: that commit's caller (a
consumer's poll, a batch of leads) waits for the pages to be copied into the database file and for its fsync, about
a third of routing's COMMIT time at 500 leads/s. Here the write engine's connections run with `wal_autocheckpoint=0`
and the commit thread, after each COMMIT, reads the WAL's length from the wal-index (the `-shm` file, two integers at
fixed offsets, www.sqlite.org/walformat.html); past `wake_pages` not yet copied, it wakes this thread, which runs a
PASSIVE checkpoint on a connection of its own: it copies what no reader still needs, never waits for a reader or a
writer, and writers never wait for it. A checkpoint changes no committed data, so durability is the WAL's as before
(synchronous stays as the Database sets it, for the checkpoint's fsyncs too).

The WAL only starts over from its beginning when a writer begins with every frame copied, which a checkpoint running
beside continuous writers never achieves. So past `restart_pages` in the WAL, writers run SQLite's own checkpoint in
their COMMIT again (`overgrown` tells common.db's begin hook) until the WAL has started over: by then this thread has
copied most pages, and the inline checkpoint copies only the rest. That is also the bound when this thread cannot
keep up or the wal-index cannot be read; readers pinning old snapshots hold the WAL back as they do SQLite's own
checkpoint. Another process on the same file (ingest's workers) runs its own checkpointer; SQLite lets one checkpoint
run at a time and the other's PASSIVE attempt returns at once. A process that dies leaves a WAL that SQLite recovers
when the file is next opened, and the next process's checkpointer copies it once that process writes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import threading

import structlog

log = structlog.get_logger(__name__)

# The wal-index header (native byte order): iVersion at 0, mxFrame (frames in the WAL) at 16; the checkpoint info
# follows the header's two 48-byte copies: nBackfill (frames already copied into the database) at 96.
_WAL_INDEX_VERSION = 3007000
_HEADER = struct.Struct("=I12xI")
_BACKFILL = struct.Struct("=I")


class WalCheckpointer:
    """Checkpoints one SQLite file's WAL in a thread of its own; `committed()` is called after each COMMIT."""

    IDLE_S = 30.0  # an idle thread ends (its connection closed); the next wake-up starts another
    PAUSE_S = 0.02  # at least this between two checkpoints: a burst of wake-ups while one runs makes one more

    def __init__(
        self, path: str, *, synchronous: str, busy_ms: int, wake_pages: int = 1000, restart_pages: int = 4000
    ) -> None:
        self.path = path
        self.wake_pages = wake_pages
        self.restart_pages = restart_pages
        self.overgrown = False  # read by writers' begin hook: checkpoint inline while True
        self.checkpoints = 0
        self._synchronous = synchronous
        self._busy_ms = busy_ms
        self._shm: int | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._shm_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """After a COMMIT, on the commit thread: wake the checkpointer if the WAL has enough pages to copy."""
        if self._stop.is_set():
            return
        frames = self.wal_frames()
        if frames is None:  # no wal-index to read: SQLite's own checkpoint keeps the WAL short
            self.overgrown = True
            return
        length, pending = frames
        self.overgrown = length >= self.restart_pages
        if pending >= self.wake_pages:
            self.wake()

    def wal_frames(self) -> tuple[int, int] | None:
        """(frames in the WAL, frames not yet copied into the database), or None if the wal-index cannot be read."""
        # Under its own lock: close() on another thread must not close (or let the system reuse) the descriptor
        # between the check and the read.
        with self._shm_lock:
            if self._stop.is_set():
                return None
            try:
                if self._shm is None or os.fstat(self._shm).st_nlink == 0:  # gone when every connection closed
                    self._close_shm()
                    self._shm = os.open(self.path + "-shm", os.O_RDONLY)
                head = os.pread(self._shm, 100, 0)
            except OSError:
                return None
        if len(head) < 100:
            return None
        version, length = _HEADER.unpack_from(head)
        if version != _WAL_INDEX_VERSION:
            return None
        (backfilled,) = _BACKFILL.unpack_from(head, 96)
        return length, max(length - backfilled, 0)

    def wake(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="sqlite-checkpoint", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop the thread (after the checkpoint it may be running) and let go of the wal-index; blocks until then."""
        with self._lock:
            self._stop.set()
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._shm_lock:
            self._close_shm()

    def _close_shm(self) -> None:
        shm, self._shm = self._shm, None
        if shm is not None:
            with contextlib.suppress(OSError):
                os.close(shm)

    def _work(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                if not self._wake.wait(self.IDLE_S):
                    with self._lock:
                        if not self._wake.is_set():
                            self._thread = None
                            return
                if self._stop.is_set():
                    return
                self._wake.clear()
                try:
                    connection = connection or self._connect()
                    self._checkpoint(connection)
                except sqlite3.Error:
                    log.warning("sqlite_checkpoint_failed", exc_info=True)
                    with contextlib.suppress(sqlite3.Error):
                        if connection is not None:
                            connection.close()
                    connection = None
                self._stop.wait(self.PAUSE_S)
        finally:
            if connection is not None:
                with contextlib.suppress(sqlite3.Error):
                    connection.close()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=self._busy_ms / 1000, isolation_level=None)
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        connection.execute("PRAGMA wal_autocheckpoint=0")
        return connection

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if not busy:  # another process's checkpoint was running: it copies the pages
            self.checkpoints += 1
