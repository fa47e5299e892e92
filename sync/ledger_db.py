"""The ledger's database, whichever keeps it: one small interface (`Db`) over SQLite (stdlib, a
file in the state directory) and PostgreSQL (psycopg 3, `sync.ledger_pg`), and where a
PostgreSQL state is (`PgState`, read from `state:` or LOOPS_SYNC_STATE).

No ORM: the ledger's statements are written once, in SQL both understand, with SQLite's `?`
marks (the PostgreSQL connection turns them into psycopg's). What differs is behind `Db`: how a
connection opens, how a write transaction is taken, the schema's migrations, whether a table's
rows lie in the order of its key (how planning reads them in pages, `sync.snapshot`), and which
exceptions mean "the database failed".
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sync.ledger_schema import MIGRATIONS, canonical_identity, ls2_key_of_identity
from sync.sqlite_wal import use_wal

__all__ = [
    "DEFAULT_SCHEMA",
    "Cursor",
    "Db",
    "PgState",
    "SqliteDb",
    "is_postgresql",
    "masked",
    "open_db",
    "statements",
]

DEFAULT_SCHEMA = "loops_sync"
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
FETCH_ROWS = 50_000


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    """One connection to the ledger's database, in autocommit between transactions."""

    where: str  # for messages: the file, or the URL without its password
    errors: tuple[type[Exception], ...]  # what the driver raises when the database fails
    migrations: Sequence[str]  # this backend's schema, version by version
    # Whether a table's rows lie in the order of its primary key (SQLite's WITHOUT ROWID tables),
    # so that a range of keys is a few neighbouring pages; not so in a PostgreSQL heap.
    clustered: bool

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def execute_all(self, pending: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Each statement with its parameters, in order (one write transaction's batch)."""
        ...

    def batches(
        self, statement: str, params: Sequence[Any], rows: int = FETCH_ROWS
    ) -> Iterator[list[Any]]:
        """The rows of a query, `rows` at a time, never the whole result at once; the query is
        read to its end (or its reader stops)."""
        ...

    def insert(self, statement: str, params: Sequence[Any]) -> int:
        """Run an INSERT ending in `RETURNING id` and give the id."""
        ...

    def transaction(self, *, exclusive: bool = False) -> AbstractContextManager[None]:
        """A write transaction, rolled back on any error. `exclusive`: also serialised with
        every other exclusive one on this ledger (migrations), the schema made if missing."""
        ...

    def schema_version(self) -> int:
        """The version of the ledger's schema; 0 when it has no tables yet."""
        ...

    def reader(self) -> Db:
        """A connection of its own to the same ledger, for a reader in another thread or one
        that outlives this connection. It never creates a ledger."""
        ...

    def close(self) -> None: ...


def open_db(place: Path | PgState) -> Db:
    """A connection to the ledger at `place`, made if missing. Raises the backend's errors
    (`Db.errors`); a PostgreSQL that cannot be reached raises LedgerError."""
    if isinstance(place, PgState):
        from sync.ledger_pg import PgDb  # noqa: PLC0415  # psycopg only when asked for

        return PgDb(place)
    return SqliteDb(place)


def statements(script: str) -> list[str]:
    """A migration's statements, split at ';' (none holds one inside a string)."""
    return [statement for statement in script.split(";") if statement.strip()]


BUSY_SECONDS = 10.0  # how long a ledger statement waits for another run's write


class SqliteDb:
    """A ledger file (WAL mode: readers never wait for the writer)."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    migrations: Sequence[str] = MIGRATIONS
    clustered = True

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.where = str(path)
        # The busy wait holds from the first statement: switching an old ledger to WAL waits
        # for a run migrating it (under load that took more than sqlite3's default 5 s).
        if create:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_SECONDS)
        else:
            uri = f"{path.resolve().as_uri()}?mode=rw"
            self._db = sqlite3.connect(uri, uri=True, timeout=BUSY_SECONDS)
        self._db.create_function("ls2_key", 3, ls2_key_of_identity, deterministic=True)
        self._db.create_function("ls2_identity", 1, canonical_identity, deterministic=True)
        if create:
            use_wal(self._db, BUSY_SECONDS)
            self._db.execute("PRAGMA synchronous=NORMAL")

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(statement, params)

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(statement, rows)

    def execute_all(self, pending: Sequence[tuple[str, Sequence[Any]]]) -> None:
        for statement, params in pending:
            self._db.execute(statement, params)

    def batches(
        self, statement: str, params: Sequence[Any], rows: int = FETCH_ROWS
    ) -> Iterator[list[Any]]:
        cursor = self._db.execute(statement, params)
        yield from iter(lambda: cursor.fetchmany(rows), [])

    def insert(self, statement: str, params: Sequence[Any]) -> int:
        return int(self._db.execute(statement, params).fetchone()[0])

    @contextmanager
    def transaction(self, *, exclusive: bool = False) -> Iterator[None]:
        """BEGIN IMMEDIATE: the one writer, so every write transaction is exclusive here."""
        del exclusive
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                with suppress(sqlite3.Error):  # the error that got us here is the one to tell
                    self._db.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        found = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if found is None:
            return 0
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def reader(self) -> Db:
        return SqliteDb(self.path, create=False)

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class PgState:
    """A ledger kept in PostgreSQL: the URL as given (`postgresql://user@host:5432/db`, with an
    optional `?schema=name`, default `loops_sync`). The password comes from the URL or from
    the driver's environment (PGPASSWORD, ~/.pgpass) and is never shown (`where`)."""

    url: str

    @classmethod
    def parse(cls, url: str) -> PgState:
        """Raises ValueError saying what is wrong (the URL itself is not repeated)."""
        state = cls(url.strip())
        if not is_postgresql(state.url):
            raise ValueError("a PostgreSQL state starts with postgresql:// or postgres://")
        if not SCHEMA_NAME.fullmatch(state.schema):
            raise ValueError(
                "the schema (?schema=...) must be a lower-case SQL name: letters, digits and "
                "_, at most 63, not starting with a digit"
            )
        return state

    @property
    def schema(self) -> str:
        return dict(parse_qsl(urlsplit(self.url).query)).get("schema", DEFAULT_SCHEMA)

    @property
    def conninfo(self) -> str:
        """The URL libpq takes: without `schema`, which is ours, not libpq's."""
        parts = urlsplit(self.url)
        kept = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
        return urlunsplit(parts._replace(query=urlencode(kept)))

    @property
    def where(self) -> str:
        return masked(self.url)

    def lock_key(self, sync: str) -> tuple[int, int]:
        """The advisory lock of one sync in this schema: two non-negative 32-bit numbers (as
        `pg_locks` shows them, so that a second run can find the holder)."""
        digest = hashlib.sha256(f"loops-sync lock\0{self.schema}\0{sync}".encode()).digest()
        return int.from_bytes(digest[:4]) & 0x7FFF_FFFF, int.from_bytes(digest[4:8]) & 0x7FFF_FFFF


def is_postgresql(place: str) -> bool:
    return place.startswith(("postgresql://", "postgres://"))


def masked(url: str) -> str:
    """The URL without its password (in the authority or a `password=` parameter)."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        parts = parts._replace(netloc=user + host)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in query):
        hidden = [(k, "***" if k == "password" else v) for k, v in query]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return urlunsplit(parts)
