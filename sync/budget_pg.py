"""The budget's store across hosts: PostgreSQL (psycopg 3), in the schema `loops_sync` (or the
one the URL's `?schema=` names, as for the ledger).

Runs on any host that reach one server share their team's budget. One transaction per renewal
locks the budget's row in `loops_sync.budgets` (FOR UPDATE: a run killed mid-transaction loses
its connection, and the server releases the lock) and reads the time from the server's clock,
the one clock every host agrees on here. The tables are created by the first run that needs
them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from sync.budget import Grant, Member, Settlement, StoreUnavailable
from sync.ledger_db import DEFAULT_SCHEMA, PgState, masked

__all__ = ["SCHEMA", "PgStore", "masked"]  # masked: from sync.ledger_db, where the ledger uses it

SCHEMA = DEFAULT_SCHEMA
CONNECT_SECONDS = 5
_COLUMNS = "id, team_limit, joined, share, held, held_until, expires"
# Unqualified: the connection's search_path is the schema.
_CREATE = """
CREATE TABLE IF NOT EXISTS budgets (budget text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS budget_members (
    budget text NOT NULL REFERENCES budgets ON DELETE CASCADE,
    id text NOT NULL,
    team_limit float8 NOT NULL,
    joined float8 NOT NULL,
    share float8 NOT NULL,
    held float8 NOT NULL,
    held_until float8 NOT NULL,
    expires float8 NOT NULL,
    PRIMARY KEY (budget, id)
)"""


class PgStore:
    """Budgets in PostgreSQL; one connection, reopened after a failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.state = PgState(url)
        self.where = masked(url)
        self._db: psycopg.Connection[tuple[object, ...]] | None = None
        self._connect(create=True)

    def _connect(self, *, create: bool = False) -> psycopg.Connection[tuple[object, ...]]:
        if self._db is not None and not self._db.closed:
            return self._db
        try:
            self._db = psycopg.connect(
                self.state.conninfo, autocommit=True, connect_timeout=CONNECT_SECONDS
            )
            schema = sql.Identifier(self.state.schema)
            self._db.execute(sql.SQL("SET search_path TO {}").format(schema))
            # A renewal waits for no lock or statement longer than a connection may take.
            self._db.execute(f"SET statement_timeout = '{CONNECT_SECONDS}s'")
            if create:
                with self._db.transaction():
                    # CREATE ... IF NOT EXISTS races itself: first runs on two hosts take turns.
                    self._db.execute("SELECT pg_advisory_xact_lock(hashtext('loops_sync budget'))")
                    self._db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
                    self._db.execute(_CREATE)
        except psycopg.Error as error:
            raise StoreUnavailable(self._message(error)) from None
        return self._db

    def transact(self, budget: str, decide: Callable[[float, list[Member]], Settlement]) -> Grant:
        """One transaction: the budget's row locked, the server's clock, the decision, writes."""
        try:
            db = self._connect()
            with db.transaction():
                return self._transact(db, budget, decide)
        except psycopg.Error as error:
            self.close()  # a broken connection is opened again at the next renewal
            raise StoreUnavailable(self._message(error)) from None

    def _transact(
        self,
        db: psycopg.Connection[tuple[object, ...]],
        budget: str,
        decide: Callable[[float, list[Member]], Settlement],
    ) -> Grant:
        db.execute(
            "INSERT INTO budgets VALUES (%s) ON CONFLICT DO NOTHING",
            (budget,),
        )
        db.execute("SELECT 1 FROM budgets WHERE budget = %s FOR UPDATE", (budget,))
        clock = db.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM budget_members WHERE budget = %s",  # noqa: S608  # constant
            (budget,),
        ).fetchall()
        now = float(clock[0]) if clock else 0.0  # type: ignore[arg-type]  # float8
        settled = decide(now, [Member(*row) for row in rows])  # type: ignore[arg-type]  # columns
        with db.cursor() as cursor:
            cursor.executemany(
                "DELETE FROM budget_members WHERE budget = %s AND id = %s",
                [(budget, member_id) for member_id in settled.gone],
            )
        for row in settled.writes:
            db.execute(
                f"INSERT INTO budget_members (budget, {_COLUMNS})"  # noqa: S608  # constant
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (budget, id) DO UPDATE SET"
                " team_limit = excluded.team_limit, share = excluded.share,"
                " held = excluded.held, held_until = excluded.held_until,"
                " expires = excluded.expires",
                (budget, *astuple(row)),
            )
        return settled.grant

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _message(self, error: psycopg.Error) -> str:
        """The server's words, first line, with the password (should it appear) masked."""
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        password = urlsplit(self.url).password
        if password:
            text = text.replace(password, "***")
        return f"{self.where}: {text}"
