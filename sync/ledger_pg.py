"""The ledger in PostgreSQL (psycopg 3): its connection (`PgDb`) and the per-sync lock.

Every table lives in the state's schema (default `loops_sync`), set as the connection's
search_path, so the ledger's statements name tables as they do in SQLite; rows are keyed by sync
name, so syncs and teams share one database without seeing each other's rows. The lock is a
session-level advisory lock: the server releases it when the holder's connection ends, killed
or not, as the OS releases a file lock.
"""

from __future__ import annotations

import os
import socket
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from itertools import count
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from sync.errors import LedgerError, LockedError
from sync.ledger_db import FETCH_ROWS, Cursor, Db, PgState
from sync.ledger_schema import PG_MIGRATIONS

__all__ = ["PgDb", "advisory_lock", "connect"]

CONNECT_SECONDS = 10
APPLICATION = "loops-sync"
# A holder that vanished without closing its connection (its host lost power, its network cut)
# is noticed by the server's keepalives after about two minutes, and its lock released then;
# a server that closes idle sessions must not close the lock's.
LOCK_SESSION = {
    "tcp_keepalives_idle": "60",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "6",
    "idle_session_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
}
LOCK_GRACE = 3.0  # seconds a lock whose holder's session is ending may take to be released
_cursors = count()


def connect(state: PgState, application: str = APPLICATION) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection in autocommit, its search_path the state's schema. A server that cannot be
    reached, or refuses the user, raises LedgerError (exit 6), the password never shown."""
    try:
        db = psycopg.connect(
            state.conninfo,
            autocommit=True,
            connect_timeout=CONNECT_SECONDS,
            application_name=application[:63],
        )
        db.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(state.schema)))
    except psycopg.Error as error:
        raise LedgerError(
            f"cannot open the ledger in {state.where} ({message(state, error)}): check the "
            "server, the user and its password (in the URL or PGPASSWORD), then run again"
        ) from None
    return db


def message(state: PgState, error: BaseException) -> str:
    """The server's words, first line, with the password (should it appear) masked."""
    text = str(error).strip()
    text = text.splitlines()[0] if text else type(error).__name__
    password = urlsplit(state.url).password
    return text.replace(password, "***") if password else text


@lru_cache(maxsize=256)
def _marks(statement: str) -> str:
    """A statement written with SQLite's `?` marks, in psycopg's: a literal % doubled."""
    return statement.replace("%", "%%").replace("?", "%s")


class PgDb:
    """The ledger's `Db` in PostgreSQL (`sync.ledger_db`)."""

    errors: tuple[type[Exception], ...] = (psycopg.Error,)
    migrations: Sequence[str] = PG_MIGRATIONS
    clustered = False

    def __init__(self, state: PgState) -> None:
        self.state = state
        self.where = state.where
        self._db = connect(state)
        # A ledger let go unclosed (a notebook, a test) closes its connection, as sqlite3 does.
        weakref.finalize(self, self._db.close)

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(_marks(statement), tuple(params))

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._db.cursor() as cursor:
            cursor.executemany(_marks(statement), rows)

    def execute_all(self, pending: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """In a pipeline: a batch costs one round trip to the server, not one per statement."""
        with self._db.pipeline():
            for statement, params in pending:
                self._db.execute(_marks(statement), tuple(params))

    def batches(
        self, statement: str, params: Sequence[Any], rows: int = FETCH_ROWS
    ) -> Iterator[list[Any]]:
        """Through a server-side cursor: the server keeps the result, the client a batch."""
        with (
            self._db.transaction(),
            self._db.cursor(name=f"ledger_read_{next(_cursors)}") as cursor,
        ):
            cursor.execute(_marks(statement), tuple(params))
            while batch := cursor.fetchmany(rows):
                yield batch

    def insert(self, statement: str, params: Sequence[Any]) -> int:
        row = self._db.execute(_marks(statement), tuple(params)).fetchone()
        return int(row[0]) if row else 0

    @contextmanager
    def transaction(self, *, exclusive: bool = False) -> Iterator[None]:
        """`exclusive`: behind a transaction-level advisory lock of the schema, which also
        makes the schema: `CREATE ... IF NOT EXISTS` run by two first runs at once races."""
        with self._db.transaction():
            if exclusive:
                self._db.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))",
                    (f"loops-sync ledger {self.state.schema}",),
                )
                schema = sql.Identifier(self.state.schema)
                self._db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            yield

    def schema_version(self) -> int:
        table = f"{self.state.schema}.meta"
        exists = self._db.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if not exists or not exists[0]:
            return 0
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def reader(self) -> Db:
        return PgDb(self.state)

    def close(self) -> None:
        self._db.close()


@contextmanager
def advisory_lock(state: PgState, sync: str) -> Iterator[None]:
    """Hold the sync's advisory lock for the block, on a connection of its own; a second run
    gets LockedError (exit 4) naming the holder as the server knows it."""
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
    holder = f"pid {os.getpid()} on {socket.gethostname()}, started {started}"
    db = connect(state, f"{APPLICATION} {holder}")
    try:
        key = state.lock_key(sync)
        try:
            _keep_alive(db)
            found = _take(db, key)
        except psycopg.Error as error:
            raise LedgerError(
                f"cannot take the lock of sync '{sync}' in {state.where}: {message(state, error)}"
            ) from None
        if found is not None:
            raise LockedError(
                f"another run of sync '{sync}' is in progress ({found}); PostgreSQL advisory "
                f"lock in {state.where}, schema {state.schema}"
            )
        yield
    finally:
        db.close()


def _take(db: psycopg.Connection[tuple[Any, ...]], key: tuple[int, int]) -> str | None:
    """Take the lock, or name its holder. A holder that has just exited may hold it a moment
    longer, while the server ends its session: a run that follows a killed one at once (a
    supervisor's restart) waits that moment rather than exit 4."""
    deadline = time.monotonic() + LOCK_GRACE
    while True:
        row = db.execute("SELECT pg_try_advisory_lock(%s::int4, %s::int4)", key).fetchone()
        if row and row[0]:
            return None
        if time.monotonic() >= deadline:
            return _holder(db, key)
        time.sleep(0.1)


def _keep_alive(db: psycopg.Connection[tuple[Any, ...]]) -> None:
    """LOCK_SESSION, each setting this server has (idle_session_timeout came in version 14)."""
    db.execute(
        "SELECT set_config(name, %s::jsonb ->> name, false) FROM pg_settings WHERE name = ANY(%s)",
        (Jsonb(LOCK_SESSION), list(LOCK_SESSION)),
    )


def _holder(db: psycopg.Connection[tuple[Any, ...]], key: tuple[int, int]) -> str:
    """Who holds the lock: the name its connection gave (pid, host, start), where the server
    lets this user see it."""
    row = db.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid::int8 = %s AND l.objid::int8 = %s",
        key,
    ).fetchone()
    name = str(row[0]) if row and row[0] else ""
    return (
        name.removeprefix(f"{APPLICATION} ") if name.startswith(APPLICATION) else "unknown holder"
    )
