"""One run of a sync at a time: a lock beside the ledger, released by the OS if the holder dies.

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
    """One run of a sync at a time: an OS file lock, released by the OS if the holder dies."""
    state.make()
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
