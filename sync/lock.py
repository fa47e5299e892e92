"""One run of a sync at a time: a lock beside the ledger, released if the holder dies (by the
OS for the file lock beside a SQLite ledger, by the server for a PostgreSQL advisory lock).

A second run finds it held and stops with LockedError (exit 4) before it sends anything.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sync.errors import LockedError, SourceError
from sync.state import StateDir

__all__ = ["hold_lock"]


@contextmanager
def hold_lock(state: StateDir) -> Iterator[None]:
    """One run of a sync at a time: an OS file lock, released by the OS if the holder dies;
    with a PostgreSQL state, the sync's advisory lock there (`sync.ledger_pg`)."""
    state.make()
    if state.database is not None:
        from sync.ledger_pg import advisory_lock  # noqa: PLC0415  # psycopg only when asked for

        with advisory_lock(state.database, state.sync):
            yield
        return
    path, sync = state.lock_file, state.sync
    try:
        handle = path.open("a+")
    except OSError as error:
        raise SourceError(f"cannot write the lock file {path}: {error.strerror}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown holder"
            raise LockedError(
                f"another run of sync '{sync}' is in progress ({holder}); lock file {path}"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
        handle.write(f"pid {os.getpid()}, started {started}")
        handle.flush()
        yield
    finally:
        handle.close()
