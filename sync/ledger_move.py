"""Moving a sync's ledger between states: from a SQLite file to PostgreSQL when a team moves its
job into containers, or back.

`export_state` writes the rows of the config's sync (contacts, delivered events, failures, run
history) from its state into FILE, a new SQLite ledger of its own. `import_state` adds the rows
of that sync from a ledger file (an export, or a state directory's `ledger.sqlite` itself) to
the config's state. Both hold the sync's lock, so that no run plans against a half-moved
ledger, and copy in bounded batches; an import is one transaction: all of it or nothing.

An import is a union, never a loss: every delivered event of either side is kept (an occurrence
both know keeps every identifier either found it by), a contact keeps the payload delivered
last, a failure and a run already in the state are kept as they are there.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from sync.config import Config
from sync.errors import SourceError
from sync.ledger import Ledger
from sync.ledger_db import Db, SqliteDb, open_db
from sync.lock import hold_lock

__all__ = ["Moved", "export_state", "import_state", "rows_text"]


@dataclass(frozen=True)
class Table:
    """A table's rows of one sync, and how one joins rows already there."""

    name: str
    columns: tuple[str, ...]
    on_conflict: str

    def insert(self) -> str:
        marks = ", ".join("?" * len(self.columns))
        return (
            f"INSERT INTO {self.name} ({', '.join(self.columns)}) VALUES ({marks}) "  # noqa: S608  # constants
            f"{self.on_conflict}"
        )

    def select(self) -> str:
        return f"SELECT {', '.join(self.columns)} FROM {self.name} WHERE sync = ?"  # noqa: S608  # constants


TABLES = (
    Table(
        "contacts",
        ("sync", "identity", "hash", "delivered_at", "props"),
        "ON CONFLICT (sync, identity) DO UPDATE SET hash = excluded.hash, "
        "delivered_at = excluded.delivered_at, props = excluded.props "
        "WHERE excluded.delivered_at > contacts.delivered_at",
    ),
    Table(
        "events",
        (
            "sync",
            "key",
            "identity",
            "event",
            "delivered_at",
            "key_email",
            "key_user",
            "email",
            "user_id",
            "once_per",
        ),
        "ON CONFLICT (sync, key) DO UPDATE SET "
        "key_email = coalesce(events.key_email, excluded.key_email), "
        "key_user = coalesce(events.key_user, excluded.key_user), "
        "email = coalesce(events.email, excluded.email), "
        "user_id = coalesce(events.user_id, excluded.user_id)",
    ),
    Table("event_once_per", ("sync", "event", "columns", "retired"), "ON CONFLICT DO NOTHING"),
    Table(
        "failures",
        ("sync", "kind", "ref", "attempts", "last_error", "updated_at"),
        "ON CONFLICT DO NOTHING",
    ),
)
RUN_COLUMNS = (
    "sync",
    "started_at",
    "ended_at",
    "exit_code",
    "config_hash",
    "counts",
    "status",
    "reason",
)


@dataclass(frozen=True)
class Moved:
    """What an export or import copied: rows of the sync per table, read from `source`."""

    sync: str
    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)


def export_state(config: Config, file: Path) -> Moved:
    """Write the sync's ledger rows from the config's state into `file`, a new SQLite ledger.
    An existing `file` is refused, not overwritten (it may be another sync's export)."""
    if file.exists():
        raise SourceError(f"{file} already exists: export into a new file")
    with hold_lock(config.state):
        Ledger(file, config.name).close()  # a ledger of this version's schema
        with closing(open_db(config.state.ledger)) as source, closing(SqliteDb(file)) as target:
            try:
                rows = _copy(source, target, config.name)
            except BaseException:
                file.unlink(missing_ok=True)
                raise
    return Moved(config.name, config.state.where, str(file), rows)


def import_state(config: Config, file: Path) -> Moved:
    """Add the sync's rows of the ledger `file` to the config's state, in one transaction."""
    _check_ledger_file(file)
    Ledger(file, config.name).close()  # an older ledger file is migrated as a run would
    with (
        hold_lock(config.state),
        closing(SqliteDb(file, create=False)) as source,
    ):
        Ledger(config.state.ledger, config.name).close()  # made and migrated if need be
        syncs = _syncs(source)
        if config.name not in syncs:
            held = ", ".join(sorted(syncs)) or "none"
            raise SourceError(f"{file} holds no rows of sync '{config.name}' (it holds: {held})")
        with closing(open_db(config.state.ledger)) as target:
            rows = _copy(source, target, config.name)
    return Moved(config.name, str(file), config.state.where, rows)


def _copy(source: Db, target: Db, sync: str) -> dict[str, int]:
    """Every row of `sync` from `source` to `target`, in one transaction of `target`."""
    rows: dict[str, int] = {}
    try:
        with target.transaction():
            for table in TABLES:
                rows[table.name] = 0
                for batch in source.batches(table.select(), (sync,)):
                    target.executemany(table.insert(), batch)
                    rows[table.name] += len(batch)
            rows["runs"] = _copy_runs(source, target, sync)
    except (*source.errors, *target.errors) as error:
        raise SourceError(
            f"cannot move the ledger of sync '{sync}' ({error}): nothing was moved"
        ) from None
    return rows


def _copy_runs(source: Db, target: Db, sync: str) -> int:
    """The run history, each run once: a run the target already has (same start, same
    config) is not added again when the same file is imported twice."""
    there = {
        (started, config_hash)
        for started, config_hash in target.execute(
            "SELECT started_at, config_hash FROM runs WHERE sync = ?", (sync,)
        ).fetchall()
    }
    insert = (
        f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) "  # noqa: S608  # constants
        f"VALUES ({', '.join('?' * len(RUN_COLUMNS))})"
    )
    copied = 0
    select = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE sync = ? ORDER BY id"  # noqa: S608  # constants
    for batch in source.batches(select, (sync,)):
        new = [row for row in batch if (row[1], row[4]) not in there]
        target.executemany(insert, new)
        copied += len(batch)
    return copied


def _syncs(db: Db) -> set[str]:
    found = db.execute(
        "SELECT sync FROM contacts UNION SELECT sync FROM events UNION SELECT sync FROM runs"
    ).fetchall()
    return {sync for (sync,) in found}


def _check_ledger_file(file: Path) -> None:
    """`file` must be a ledger already: an import never makes one of a stray file."""
    if not file.is_file():
        raise SourceError(f"{file}: no such file (a ledger, as `state export` writes it)")
    try:
        with closing(SqliteDb(file, create=False)) as db:
            version = db.schema_version()
    except SqliteDb.errors as error:
        raise SourceError(f"{file} is not a loops-sync ledger ({error})") from None
    if version == 0:
        raise SourceError(f"{file} is not a loops-sync ledger (no schema version in it)")


def rows_text(rows: dict[str, int], names: Sequence[str] = ("contacts", "events", "runs")) -> str:
    """`1,000 contacts, 1,000 events, 3 runs`, for the CLI."""
    return ", ".join(f"{rows.get(name, 0):,} {name}" for name in names)
