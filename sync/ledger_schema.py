"""The ledger's SQLite schema, version by version, and what migrating it computes.

Each entry of MIGRATIONS moves the schema from version N to N+1; `Ledger` applies the ones a
file lacks, each in one transaction with the version it reaches.
"""

from __future__ import annotations

import re

from sync.keys import event_key

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "canonical_identity", "ls2_key_of_identity"]

# Each entry moves the schema from version N to N+1; the ledger applies the ones it lacks.
# Statements are separated by ';' (none may hold one inside a string).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE contacts (
        sync TEXT NOT NULL, identity TEXT NOT NULL, hash TEXT NOT NULL, delivered_at REAL NOT NULL,
        PRIMARY KEY (sync, identity)) WITHOUT ROWID;
    CREATE TABLE events (
        sync TEXT NOT NULL, key TEXT NOT NULL, identity TEXT NOT NULL, event TEXT NOT NULL,
        delivered_at REAL NOT NULL, PRIMARY KEY (sync, key)) WITHOUT ROWID;
    CREATE TABLE failures (
        sync TEXT NOT NULL, kind TEXT NOT NULL, ref TEXT NOT NULL, attempts INTEGER NOT NULL,
        last_error TEXT NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (sync, kind, ref)) WITHOUT ROWID;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY, sync TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL,
        exit_code INTEGER, config_hash TEXT NOT NULL, counts TEXT);
    CREATE INDEX runs_by_sync ON runs (sync, started_at);
    """,
    # ls2: an occurrence is found by its email or its userId. Events delivered under ls1 keep
    # their key, gain the key of the identifier they were sent with (as if without once_per:
    # their once_per values are not known), and are found by either.
    """
    ALTER TABLE events ADD COLUMN key_email TEXT;
    ALTER TABLE events ADD COLUMN key_user TEXT;
    ALTER TABLE events ADD COLUMN email TEXT;
    ALTER TABLE events ADD COLUMN user_id TEXT;
    ALTER TABLE events ADD COLUMN once_per TEXT;
    ALTER TABLE contacts ADD COLUMN props TEXT;
    CREATE INDEX events_by_key_email ON events (sync, key_email);
    CREATE INDEX events_by_key_user ON events (sync, key_user);
    CREATE TABLE event_once_per (
        sync TEXT NOT NULL, event TEXT NOT NULL, columns TEXT NOT NULL,
        retired INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sync, event, columns)) WITHOUT ROWID;
    UPDATE events SET email = substr(identity, 3), key_email = ls2_key(sync, event, identity)
        WHERE identity LIKE 'e:%';
    UPDATE events SET user_id = substr(ls2_identity(identity), 3),
        key_user = ls2_key(sync, event, identity) WHERE identity LIKE 'u:%';
    """,
    # A run's end, told apart: finished (an exit code from a completed run), failed (an error
    # ended it: `reason` says which), died (no end recorded), or still running.
    """
    ALTER TABLE runs ADD COLUMN status TEXT NOT NULL DEFAULT 'running';
    ALTER TABLE runs ADD COLUMN reason TEXT;
    UPDATE runs SET status = 'finished' WHERE ended_at IS NOT NULL;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def ls2_key_of_identity(sync: str, event: str, identity: str) -> str:
    """For the migration to ls2: the key of an `ls1` occurrence by its one identifier, in
    today's one text form (a user id read from a float column was written `u:101.0`)."""
    return event_key(sync, event, canonical_identity(identity))


def canonical_identity(identity: str) -> str:
    whole = re.fullmatch(r"u:(-?\d+)\.0+", identity)
    return f"u:{whole.group(1)}" if whole else identity
