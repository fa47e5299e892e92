"""What Loops has confirmed for one sync, read out of the ledger for planning (`Held`), and
how an event's `once_per` columns are named in it.

A nightly run reads every payload hash and every event key of the sync: millions of rows. A
Python tuple a row costs about a microsecond and, held in a list, gigabytes; here the database
joins a page of values into one text (SQLite's `group_concat`, PostgreSQL's `string_agg`) and
Polars splits it again, so a page of 100,000 values crosses into Python as one string, and one
page at a time is in memory. The same statements serve both databases (`sync.ledger_db`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any

import polars as pl

from sync.held import ONCE_PER_SCHEMA, Fingerprints, Held, empty_once_per, key_set
from sync.ledger_db import Db

__all__ = [
    "ONCE_PER_SCHEMA",
    "LedgerContacts",
    "Page",
    "connected",
    "empty_once_per",
    "once_per_changed",
    "once_per_columns",
    "once_per_signature",
    "other_once_per",
    "read_held",
    "values_in_pages",
]

PAGE_ROWS = 100_000
SEPARATOR = "\x1e"  # joins a page's values; a page with a value holding it is read row by row
ASKED_AT_ONCE = 500  # identities per query: SQLite before 3.32 allows 999 parameters


@dataclass(frozen=True)
class Page:
    """Values to read from `table` a page of rows at a time, in the order of `key`, an indexed
    column after `sync`. `values`: SQL expressions, each a column of values (a null is none);
    `only`: a condition on the rows read."""

    table: str
    key: str
    values: tuple[str, ...]
    only: str = "true"


CONTACT_HASHES = Page("contacts", "identity", ("hash",))
PRESENT_CONTACTS = Page("contacts", "identity", ("identity",), "removed IS NULL")
# Every key an occurrence is known by: its own, its email's and its userId's, each once. Its
# userId's is read from its index, which holds only the occurrences that have one.
EVENT_KEYS = Page("events", "key", ("key", "nullif(key_email, key)"))
USER_KEYS = Page("events", "key_user", ("key_user",), "key_user != key")


def read_held(db: Db, sync: str, once_per: Mapping[str, Sequence[str]] | None = None) -> Held:
    """The `Held` of `sync`. `once_per`: each event's `once_per` columns in today's config.

    The payload hashes are read on a connection of their own, beside the event keys (the
    database reads without the GIL: a second core shortens the wait), and the `Held` opens one
    whenever it asks about contacts, so it outlives `db`."""
    failed = db.execute("SELECT ref FROM failures WHERE sync = ?", (sync,)).fetchall()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-hashes") as beside:
        reading = beside.submit(_hash_set, db, sync)
        keys = chain(*(values_in_pages(db, sync, page) for page in (EVENT_KEYS, USER_KEYS)))
        events, legacy = key_set(keys)
        hashes = reading.result()
    return Held(
        hashes,
        events,
        LedgerContacts(db, sync),
        pl.Series([ref for (ref,) in failed], dtype=pl.String),
        legacy,
        other_once_per(db, sync, once_per or {}),
    )


@contextmanager
def connected(ledger: Db) -> Iterator[Db]:
    """A connection of its own to the ledger of `ledger`, closed after; `ledger` itself may
    be closed. A read never creates a ledger."""
    db = ledger.reader()
    try:
        yield db
    finally:
        db.close()


def _hash_set(ledger: Db, sync: str) -> Fingerprints:
    """Every payload hash of `sync`."""
    with connected(ledger) as db:
        return Fingerprints.of(values_in_pages(db, sync, CONTACT_HASHES))


def values_in_pages(db: Db, sync: str, page: Page) -> Iterator[pl.Series]:
    """The values of `page`, a Series per page and expression (none for an empty one).

    A page is a range of `key`, ended by its value PAGE_ROWS rows on (found through the index:
    less work than a subquery with a LIMIT); rows sharing that value end the same page."""
    after: str | None = None
    while True:
        upto = _page_end(db, sync, page, after)
        yield from _page(db, sync, page, after, upto)
        if upto is None:
            return
        after = upto


def _range(
    sync: str, page: Page, after: str | None, upto: str | None
) -> tuple[str, tuple[str, ...]]:
    """The condition of a page's rows, and its parameters. Every text is at least '' (a null
    is not): the first page starts there."""
    lower = f"{page.key} > ?" if after is not None else f"{page.key} >= ''"
    upper = f" AND {page.key} <= ?" if upto is not None else ""
    bounds = tuple(value for value in (after, upto) if value is not None)
    return f"sync = ? AND {lower}{upper} AND {page.only}", (sync, *bounds)


def _page_end(db: Db, sync: str, page: Page, after: str | None) -> str | None:
    where, params = _range(sync, page, after, None)
    found = db.execute(
        f"SELECT {page.key} FROM {page.table} WHERE {where} "  # noqa: S608  # names are constants
        f"ORDER BY {page.key} LIMIT 1 OFFSET ?",
        (*params, PAGE_ROWS - 1),
    ).fetchone()
    return None if found is None else str(found[0])


def _page(
    db: Db, sync: str, page: Page, after: str | None, upto: str | None
) -> Iterator[pl.Series]:
    where, params = _range(sync, page, after, upto)
    # The separator written into the statement: an expression would be evaluated on every row.
    aggregates = ", ".join(f"count({v}), {db.concat}({v}, '{SEPARATOR}')" for v in page.values)
    row = db.execute(f"SELECT {aggregates} FROM {page.table} WHERE {where}", params).fetchone()  # noqa: S608  # names are constants
    for index, value in enumerate(page.values):
        count, text = row[2 * index], row[2 * index + 1]
        if not count:
            continue
        values = pl.Series([text], dtype=pl.String).str.split(SEPARATOR).explode()
        if values.len() != count:  # some value holds the separator
            rows = db.execute(
                f"SELECT {value} FROM {page.table} WHERE {where} AND {value} IS NOT NULL",  # noqa: S608  # names are constants
                params,
            ).fetchall()
            values = pl.Series([found for (found,) in rows], dtype=pl.String)
        yield values


@dataclass(frozen=True)
class LedgerContacts:
    """The ledger's contacts, asked about a few identities at a time (`ContactLookup`), each
    question on a connection of its own to the ledger of `ledger`."""

    ledger: Db
    sync: str

    def known(self, identities: pl.Series) -> pl.Series:
        found = self._rows("identity", identities, {"identity": pl.String})
        held = found.get_column("identity").implode()
        return identities.is_in(held).fill_null(False).alias(identities.name)

    def props(self, identities: pl.Series) -> pl.DataFrame:
        schema = {"identity": pl.String, "props": pl.String}
        return self._rows("identity, props", identities, schema, "AND props IS NOT NULL")

    def present(self) -> Iterator[pl.Series]:
        with connected(self.ledger) as db:
            yield from values_in_pages(db, self.sync, PRESENT_CONTACTS)

    def _rows(
        self, columns: str, identities: pl.Series, schema: dict[str, Any], extra: str = ""
    ) -> pl.DataFrame:
        wanted = identities.drop_nulls().unique()
        frames = [pl.DataFrame(schema=schema)]
        if wanted.is_empty():
            return frames[0]
        with connected(self.ledger) as db:
            for offset in range(0, wanted.len(), ASKED_AT_ONCE):
                asked = wanted.slice(offset, ASKED_AT_ONCE).to_list()
                rows = db.execute(
                    f"SELECT {columns} FROM contacts WHERE sync = ? "  # noqa: S608  # constants and marks
                    f"AND identity IN ({', '.join('?' * len(asked))}) {extra}",
                    (self.sync, *asked),
                ).fetchall()
                if rows:
                    frames.append(pl.DataFrame(rows, schema=schema, orient="row"))
        return pl.concat(frames)


def other_once_per(db: Db, sync: str, once_per: Mapping[str, Sequence[str]]) -> pl.DataFrame:
    """The occurrences of each event delivered under other `once_per` columns than today's
    and not yet adopted (see `Held`, `Ledger.adopt`); none at all in the usual case."""
    frames = [empty_once_per()]
    for event, columns in once_per.items():
        if once_per_changed(db, sync, event, columns):
            batches = db.batches(
                "SELECT event, email, user_id, once_per FROM events "
                "WHERE sync = ? AND event = ? AND once_per IS NOT NULL",
                (sync, event),
            )
            frame = _frame(batches, ("event", "email", "user_id", "once_per"))
            today = pl.lit(once_per_signature(columns))
            frames.append(frame.with_columns((once_per_columns() == today).alias("current")))
    return pl.concat(frames)


def _frame(batches: Iterable[list[Any]], names: tuple[str, ...]) -> pl.DataFrame:
    """Text columns, a bounded batch of Python rows at a time: a million rows at once raised
    the peak by about 115 MB (measured), memory the process then keeps for the rest of the run."""
    schema = dict.fromkeys(names, pl.String)
    frames = [pl.DataFrame(rows, schema=schema, orient="row") for rows in batches]
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def once_per_changed(db: Db, sync: str, event: str, columns: Sequence[str]) -> bool:
    """Whether `event` was delivered under other `once_per` columns, not yet adopted."""
    changed = db.execute(
        "SELECT EXISTS (SELECT 1 FROM event_once_per WHERE sync = ? AND event = ? "
        "AND retired = 0 AND columns != ?)",
        (sync, event, once_per_signature(columns)),
    ).fetchone()[0]
    return bool(changed)


def once_per_signature(columns: Iterable[str]) -> str:
    """An event's `once_per` column names as one text, the same however they are ordered."""
    return "\x1f".join(sorted(columns))


def once_per_columns() -> pl.Expr:
    """The column names of each `once_per` JSON object (column `once_per`), as
    `once_per_signature` writes them: a value never ends in a quote and a colon, a key does."""
    names = pl.col("once_per").str.extract_all(r'"((?:[^"\\]|\\.)*)":')
    return names.list.eval(pl.element().str.slice(1).str.strip_suffix('":')).list.join("\x1f")
