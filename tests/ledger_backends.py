"""Ledgers on both backends for tests: a SQLite file, or a PostgreSQL schema of its own.

The PostgreSQL ledger is the real server at 127.0.0.1:5432 (user postgres, database test), each
test in fresh schemas dropped after it. Without the server a test is skipped, but in CI
(CI=true) it fails: a missing server must not pass for a green suite.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from sync.ledger_db import PgState

__all__ = [
    "POSTGRES",
    "Place",
    "Places",
    "drop_schema",
    "fresh_sync",
    "new_pg_state",
    "require_postgres",
]

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
Place = Path | PgState


def require_postgres() -> None:
    """Skip the test without the server; fail it in CI."""
    try:
        psycopg.connect(POSTGRES, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {error}")
        pytest.skip(f"PostgreSQL not reachable: {error}")


def new_pg_state(prefix: str = "ledger_test") -> PgState:
    """A schema no other test (nor another helper's) uses; not made until a ledger opens."""
    return PgState.parse(f"{POSTGRES}?schema={prefix}_{secrets.token_hex(6)}")


def fresh_sync(name: str = "t") -> str:
    """A sync name no other example in a shared place has used: syncs never see each other."""
    return f"{name}-{secrets.token_hex(4)}"


def drop_schema(state: PgState) -> None:
    with psycopg.connect(POSTGRES, autocommit=True) as db:
        db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(state.schema)))


class Places:
    """New ledger places of one backend, each empty; the PostgreSQL ones dropped after."""

    def __init__(self, backend: str, folder: Path) -> None:
        self.backend = backend
        self.folder = folder
        self.made: list[Place] = []

    @property
    def postgresql(self) -> bool:
        return self.backend == "postgresql"

    def new(self) -> Place:
        place: Place = (
            new_pg_state()
            if self.postgresql
            else self.folder / f"ledger-{len(self.made)}" / "ledger.sqlite"
        )
        self.made.append(place)
        return place

    def shared(self) -> Place:
        """One place for every example of a property test (making a PostgreSQL schema per
        example costs most of its time); examples keep apart by sync name (`fresh_sync`)."""
        return self.made[0] if self.made else self.new()

    def drop(self) -> None:
        for place in self.made:
            if isinstance(place, PgState):
                drop_schema(place)


@pytest.fixture(params=["sqlite", "postgresql"])
def places(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Places]:
    if request.param == "postgresql":
        require_postgres()
    made = Places(request.param, tmp_path)
    try:
        yield made
    finally:
        made.drop()


@pytest.fixture
def place(places: Places) -> Place:
    """One empty ledger place, on each backend in turn."""
    return places.new()
