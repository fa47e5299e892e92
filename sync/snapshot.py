"""What Loops has confirmed for one sync, read out of the ledger for planning (`Held`), and
how an event's `once_per` columns are named in it.

A nightly run reads every payload hash and every event key of the sync: millions of rows, read
a page of PAGE_ROWS at a time, one page at a time in memory. How a page is read follows how the
database stores rows (`Db.clustered`):

- SQLite keeps a table's rows in the order of its key (WITHOUT ROWID): a page is a range of
  keys, a few neighbouring pages of the file. A Python tuple a row costs about a microsecond, so
  SQLite joins the page's values into one text (`group_concat`) and Polars splits it again.
- PostgreSQL keeps rows in a heap, in the order they were written: a range of keys lies all over
  the table, and reading it a range at a time read the whole table once per range (a million
  events in 10 ranges: 1.3 million buffer reads, ending each range included, for a table of
  33,000 blocks; 2.5 times SQLite's time). One statement reads it once, in the order it lies, a
  page of rows at a time through a server-side cursor (`Db.batches`).
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
SEPARATOR = "\x1e"  # joins a page's values (SQLite); a page with a value holding it: row by row
ASKED_AT_ONCE = 500  # identities per query: SQLite before 3.32 allows 999 parameters


@dataclass(frozen=True)
class Page:
    """Values to read from `table` a page of rows at a time. `key`: an indexed column after
    `sync`; `values`: SQL expressions, each a column of values (a null is none); `only`: a
    condition on the rows read; `ordered`: the values are wanted in the order of `key` (where
    the database does not read them so anyway: PostgreSQL), else in any order."""

    table: str
    key: str
    values: tuple[str, ...]
    only: str = "true"
    ordered: bool = False


CONTACT_HASHES = Page("contacts", "identity", ("hash",))
# In the order of their identities (bytewise on both databases: COLLATE "C" in PostgreSQL): when
# more contacts left than a run removes, the first ones go, the same ones whichever the database.
PRESENT_CONTACTS = Page("contacts", "identity", ("identity",), "removed IS NULL", ordered=True)
# Every key an occurrence is known by: its own, its email's and its userId's, each once. Its
# userId's is read through its index, from the occurrences that have one (said in so many words:
# PostgreSQL's planner does not infer IS NOT NULL from !=, and scanned every event without it).
EVENT_KEYS = Page("events", "key", ("key", "nullif(key_email, key)"))
USER_KEYS = Page("events", "key_user", ("key_user",), "key_user IS NOT NULL AND key_user != key")


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
    """The values of `page`, a Series per page and expression (none for an empty one), a page
    of rows at a time: key ranges where rows lie in key order, else one pass (see the module)."""
    if db.clustered:
        return _in_key_ranges(db, sync, page)
    return _in_one_pass(db, sync, page)


def _in_one_pass(db: Db, sync: str, page: Page) -> Iterator[pl.Series]:
    """One statement, read PAGE_ROWS rows at a time: the server reads the sync's rows once (a
    sequential or bitmap scan, in the order they lie; through the index of `key` or a sort when
    `page.ordered`), whatever the number of pages."""
    order = f" ORDER BY {page.key}" if page.ordered else ""
    statement = (
        f"SELECT {', '.join(page.values)} FROM {page.table} "  # noqa: S608  # names are constants
        f"WHERE sync = ? AND {page.only}{order}"
    )
    for rows in db.batches(statement, (sync,), PAGE_ROWS):
        for index in range(len(page.values)):
            values = pl.Series([row[index] for row in rows], dtype=pl.String).drop_nulls()
            if values.len():
                yield values


def _in_key_ranges(db: Db, sync: str, page: Page) -> Iterator[pl.Series]:
    """A page is a range of `key`, ended by its value PAGE_ROWS rows on (found through the
    index: less work than a subquery with a LIMIT); rows sharing that value end the same page."""
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
    aggregates = ", ".join(f"count({v}), group_concat({v}, '{SEPARATOR}')" for v in page.values)
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
