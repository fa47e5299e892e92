"""What the PostgreSQL and MySQL/MariaDB readers share: messages that name the database by its
URL without the password, in the same words for every driver, and slices that close the
connection they come from.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterator

import polars as pl

from sync.errors import SourceError

__all__ = ["ClosingSlices", "cannot_connect", "query_failed", "redact_url", "without_password"]


def redact_url(url: str) -> str:
    """A database URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def without_password(text: str, url: str) -> str:
    """`text` (a driver's message) with the URL's password, as written or decoded, masked."""
    password = urllib.parse.urlsplit(url).password
    if not password:
        return text
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


class ClosingSlices(Iterator[pl.DataFrame]):
    """Slices that own what they are read from: `release` is called once, after the last slice
    or a failure, by `close()` (taking only the first slice, as `init` does), or when the slices
    are dropped unfinished (`__del__`), so no connection outlives its reading."""

    def __init__(self, slices: Iterator[pl.DataFrame], release: Callable[[], None]) -> None:
        self._slices = slices
        self._release: Callable[[], None] | None = release

    def __next__(self) -> pl.DataFrame:
        if self._release is None:
            raise StopIteration
        try:
            return next(self._slices)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __del__(self) -> None:
        self.close()
