"""What the PostgreSQL and MySQL/MariaDB readers share: messages that name the database by its
URL without the password, in the same words for every driver, and slices that close the
connection they come from, read one ahead.
"""

from __future__ import annotations

import queue
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator

import polars as pl

from sync.errors import SourceError
from sync.ledger_db import masked

__all__ = ["cannot_connect", "query_failed", "read_ahead", "redact_url", "without_password"]


def redact_url(url: str) -> str:
    """A database URL without its password (in the authority or a `password=` parameter), for
    messages: the ledger's rule (`sync.ledger_db.masked`), so every URL is masked alike."""
    return masked(url)


def without_password(text: str, url: str) -> str:
    """`text` (a driver's message) with the URL's password, as written or decoded, masked."""
    parts = urllib.parse.urlsplit(url)
    given = [value for key, value in urllib.parse.parse_qsl(parts.query) if key == "password"]
    for password in filter(None, [parts.password, *given]):
        for form in {password, urllib.parse.unquote(password)}:
            text = text.replace(form, "***")
    return text


def cannot_connect(url: str, reason: str) -> SourceError:
    return SourceError(
        f"source.sql.url: cannot connect to {redact_url(url)}: {without_password(reason, url)}"
    )


def query_failed(url: str, reason: str) -> SourceError:
    return SourceError(
        f"source.sql: the query failed on {redact_url(url)}: {without_password(reason, url)}"
    )


Opening = Callable[[], tuple[pl.Schema, Iterator[pl.DataFrame]]]


def read_ahead(
    opening: Opening, release: Callable[[], None], *, cancel: Callable[[], None]
) -> tuple[pl.Schema, Iterator[pl.DataFrame]]:
    """`opening()` (run the query: its schema and slices) in a thread of its own, its schema
    now, and its slices one ahead: the next is read from the server while the caller maps and
    plans this one (the drivers and Polars work without Python's lock). connectorx read ahead
    too, but without limit; here at most one slice waits.

    The thread waits on the server, not the caller: Ctrl-C is a KeyboardInterrupt at once, and
    `cancel` ends the query. `release` closes what the rows are read from, once: after the last
    slice or a failure, on `close()` (taking only the first slice, as `init` does), or when the
    slices are dropped unfinished, so no connection outlives its reading.
    """
    rows = _ReadAhead(opening, release, cancel)
    try:
        schema = rows.take()
    except BaseException:
        rows.close()
        raise
    assert isinstance(schema, pl.Schema)  # noqa: S101  # `opening` gives it first
    return schema, rows


class _ReadAhead(Iterator[pl.DataFrame]):
    def __init__(
        self, opening: Opening, release: Callable[[], None], cancel: Callable[[], None]
    ) -> None:
        self._release = release
        self._cancel = cancel
        self._ready: queue.Queue[object] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        # The thread is given what it reads, not `self`: dropped, these rows are closed.
        self._thread = threading.Thread(
            target=_read,
            args=(opening, self._ready, self._stop),
            name="loops-sync-sql-read",
            daemon=True,
        )
        self._closed = False
        self._thread.start()

    def take(self) -> object:
        """The next item the thread put: the schema, a slice, or the end; its error raised."""
        if self._closed:
            return _END
        item = self._ready.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def __next__(self) -> pl.DataFrame:
        try:
            item = self.take()
        except BaseException:
            self.close()
            raise
        if isinstance(item, pl.DataFrame):
            return item
        self.close()
        raise StopIteration

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._cancel()
            self._thread.join()
        self._release()

    def __del__(self) -> None:
        # At interpreter exit the thread may hold the connection: the OS closes it.
        if not sys.is_finalizing():
            self.close()


_END = object()


def _read(opening: Opening, ready: queue.Queue[object], stop: threading.Event) -> None:
    """Put the schema, each slice, then the end (or the error that ended the reading), until
    told to stop."""
    try:
        schema, slices = opening()
        if not _put(schema, ready, stop):
            return
        for piece in slices:
            if not _put(piece, ready, stop):
                return
    except BaseException as error:  # noqa: BLE001  # raised where the rows are taken
        _put(error, ready, stop)
        return
    _put(_END, ready, stop)


def _put(item: object, ready: queue.Queue[object], stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.1)
        except queue.Full:
            continue
        return True
    return False
