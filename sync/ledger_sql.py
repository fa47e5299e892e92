"""The ledger's statements besides its migrations (`sync.ledger_schema`), the same text on
SQLite and PostgreSQL (`sync.ledger_db` turns `?` into PostgreSQL's marks)."""

from __future__ import annotations

from typing import Any

__all__ = ["INSERT_EVENT", "INSERT_ONCE_PER", "LEARN", "SYNC_NAMES", "learn_params"]

# An occurrence found by `by`, any of its keys, gains the identifiers it lacked. Each key is
# looked up through its own index: an OR over the three would read every event of the sync.
# Parameters: key_email, key_user, email, user_id, then (sync, by) three times (`learn_params`).
LEARN = """
    UPDATE events SET key_email = coalesce(key_email, ?), key_user = coalesce(key_user, ?),
        email = coalesce(email, ?), user_id = coalesce(user_id, ?)
    WHERE sync = ? AND key IN (
        SELECT key FROM events WHERE sync = ? AND key = ?
        UNION SELECT key FROM events WHERE sync = ? AND key_email = ?
        UNION SELECT key FROM events WHERE sync = ? AND key_user = ?)
"""
INSERT_EVENT = (
    "INSERT INTO events (sync, key, identity, event, delivered_at, key_email, key_user, email,"
    " user_id, once_per) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
INSERT_ONCE_PER = (
    "INSERT INTO event_once_per (sync, event, columns) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
)

# The distinct names of one table's `sync` column, a lookup in its index per name (what
# PostgreSQL and SQLite both lack as a plain DISTINCT over an index: a "loose index scan").
_NAMES_OF = """{table}_names(sync) AS (
        SELECT min(sync) FROM {table}
        UNION ALL SELECT (SELECT min(sync) FROM {table} WHERE sync > {table}_names.sync)
        FROM {table}_names WHERE {table}_names.sync IS NOT NULL)"""
SYNC_NAMES = (
    "WITH RECURSIVE "  # noqa: S608  # constants
    + ", ".join(_NAMES_OF.format(table=table) for table in ("contacts", "events", "runs"))
    + " SELECT sync FROM contacts_names WHERE sync IS NOT NULL"
    " UNION SELECT sync FROM events_names WHERE sync IS NOT NULL"
    " UNION SELECT sync FROM runs_names WHERE sync IS NOT NULL ORDER BY 1"
)


def learn_params(sync: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """LEARN's parameters for a row of `Mapped.learned` (by, key_email, key_user, email,
    user_id)."""
    by, key_email, key_user, email, user_id = row
    return (key_email, key_user, email, user_id, sync, sync, by, sync, by, sync, by)
