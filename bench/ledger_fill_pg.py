"""The synthetic ledger of bench/ledger_fill.py, in PostgreSQL: the same contacts and events
(same identities, hashes and keys), in a schema of its own per size, built once and kept.

The server is BENCH_POSTGRES (default the local one, postgresql://postgres@127.0.0.1:5432/test);
the schema is `bench_held_<rows>`. Rows go in through COPY, then the tables are analysed, as a
ledger that has lived a while would be.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ledger_fill import BENCH_PROPS, synthetic_email, synthetic_hash, synthetic_key

__all__ = ["pg_ledger"]

SERVER = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def pg_ledger(rows: int, sync: str) -> tuple[str, str | None]:
    """The URL of the ledger of `rows` contacts and events of `sync`, and why it cannot be
    measured (None: it can)."""
    url = f"{SERVER}?schema=bench_held_{rows}"
    try:
        import psycopg  # noqa: PLC0415  # the bench runs without the extra too

        from sync.ledger import Ledger  # noqa: PLC0415  # the code under test
        from sync.ledger_db import PgState  # noqa: PLC0415
    except ImportError as error:
        return url, f"no PostgreSQL ledger here ({error})"
    state = PgState.parse(url)
    try:
        with psycopg.connect(state.conninfo, autocommit=True, connect_timeout=5) as db:
            if _holds(db, state.schema, rows):
                return url, None
            db.execute(f"DROP SCHEMA IF EXISTS {state.schema} CASCADE")
        print(f"  building a PostgreSQL ledger of {rows:,} contacts and events (once)", flush=True)
        Ledger(state, sync).close()
        with psycopg.connect(state.conninfo, autocommit=True) as db:
            db.execute(f"SET search_path TO {state.schema}")
            _fill(db, sync, rows)
    except psycopg.OperationalError as error:
        return url, f"PostgreSQL not reachable: {str(error).strip().splitlines()[0]}"
    return url, None


def _holds(db: Any, schema: str, rows: int) -> bool:
    found = db.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.events",)).fetchone()
    if not found or not found[0]:
        return False
    counted = db.execute(f"SELECT count(*) FROM {schema}.events").fetchone()  # noqa: S608  # ours
    return bool(counted and counted[0] == rows)


def _fill(db: Any, sync: str, rows: int) -> None:
    now = time.time()
    with db.cursor() as cursor:
        with cursor.copy(
            "COPY contacts (sync, identity, hash, delivered_at, props) FROM STDIN"
        ) as copy:
            for i in range(rows):
                copy.write_row(
                    (sync, f"e:{synthetic_email(i)}", synthetic_hash(i), now, BENCH_PROPS)
                )
        with cursor.copy(
            "COPY events (sync, key, identity, event, delivered_at, key_email, email) FROM STDIN"
        ) as copy:
            for i in range(rows):
                email = synthetic_email(i)
                key = synthetic_key(i)
                copy.write_row((sync, key, f"e:{email}", "signup", now, key, email))
    db.execute("ANALYZE contacts")
    db.execute("ANALYZE events")
