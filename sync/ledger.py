"""The ledger: what Loops has confirmed, so that runs are incremental, resumable and exactly-once.

A SQLite file (stdlib, WAL mode) in the state directory, or a PostgreSQL schema
(`sync.ledger_pg`): the same statements behind one small interface (`sync.ledger_db`). Per sync
it keeps the hash of the payload
last delivered for each contact identity, every delivered event key (forever: Loops forgets an
Idempotency-Key after 24 hours, the ledger does not), the requests that failed, and one record
per run. Contact writes are buffered and committed in batches; a crash loses at most the last
batch, which the next run re-sends harmlessly (an upsert is idempotent). Delivered events are
committed at once: a re-sent event is harmless only within Loops' 24-hour idempotency window.
A commit that fails keeps its batch for the next flush and raises LedgerError: a run must not go
on sending what it cannot record.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import orjson
import polars as pl

from sync.errors import LedgerError, SourceError
from sync.held import Held
from sync.ledger_db import Db, PgState, open_db, statements
from sync.ledger_schema import SCHEMA_VERSION
from sync.ledger_sql import INSERT_EVENT, INSERT_ONCE_PER, LEARN, SYNC_NAMES, learn_params
from sync.model import Occurrence, RunRecord, RunStatus
from sync.snapshot import once_per_changed, once_per_signature, read_held
from sync.state import make_state_dir

__all__ = [
    "SCHEMA_VERSION",
    "Ledger",
]

FLUSH_EVERY = 500
FLUSH_SECONDS = 2.0
# Writes no request stands behind (`events_batched`) are committed this many at a time: a
# commit rewrites each page it touched, so small ones cost most of adopting an audience's time
# (measured at 1M contacts and events: 46% of `run --baseline` in commits of 500).
BATCHED_FLUSH_EVERY = 50_000
Kind = Literal["contact", "event", "removal"]
DIED = (
    "died: no end was recorded (killed, out of memory, the machine stopped, the ledger could "
    "not be written, or a crash); "
    "found when the next run started"
)


class Ledger:
    """One sync's view of the ledger (a SQLite file or a PostgreSQL schema). Not thread-safe:
    one run, one event loop."""

    def __init__(self, place: Path | PgState, sync: str) -> None:
        """`place`: the SQLite file, made if missing, or the PostgreSQL state."""
        self.sync = sync
        self.where = place.where if isinstance(place, PgState) else str(place)
        if isinstance(place, Path):
            make_state_dir(place.parent)
        try:
            self._db: Db = open_db(place)  # PostgreSQL out of reach: a LedgerError
        except sqlite3.Error as error:
            raise SourceError(f"ledger {self.where}: cannot open it: {error}") from None
        try:
            self._migrate()
        except self._db.errors as error:
            self._db.close()
            raise SourceError(f"ledger {self.where}: cannot open it: {error}") from None
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._last_flush = time.monotonic()
        self._events_at_once = True  # see `event_delivered` and `events_batched`

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()

    def _migrate(self) -> None:
        version = self._db.schema_version()
        known = len(self._db.migrations)
        if version > known:
            raise self._db.errors[0](
                f"it was written by a newer loops-sync (schema {version}, this one knows "
                f"{known}); upgrade loops-sync"
            )
        for number in range(version, known):
            self._apply(number)

    def _apply(self, number: int) -> None:
        """Migration `number` and the version it reaches, in one transaction, once: a run
        opening the ledger at the same moment waits, then finds it done."""
        with self._db.transaction(exclusive=True):
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            if self._db.schema_version() == number:
                for statement in statements(self._db.migrations[number]):
                    self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(number + 1),),
                )

    # --- reading, for the plan ----------------------------------------------------------------

    def held(self, once_per: Mapping[str, Sequence[str]] | None = None) -> Held:
        """What planning asks of the ledger (`sync.held`), read in bounded pages
        (`sync.snapshot`). `once_per`: each event's `once_per` columns in today's config. The
        `Held` asks the ledger about the few contacts a plan sends on connections of its own,
        so it outlives this one."""
        return read_held(self._db, self.sync, once_per)

    def adopt(self, adopted: pl.DataFrame, once_per: Mapping[str, Sequence[str]]) -> None:
        """Record, in one transaction, the occurrences that an event delivered under its earlier
        `once_per` columns stands for (`Plan.adopted`), and retire those earlier columns: from
        now on an occurrence is new unless delivered under today's (see `plan`)."""
        columns = ("key", "identity", "event", "key_email", "key_user", "email", "userId")
        now = time.time()
        changed = [
            event
            for event, names in once_per.items()
            if once_per_changed(self._db, self.sync, event, names)
        ]
        if adopted.is_empty() and not changed:
            return
        with self._transaction():
            self._db.executemany(
                INSERT_EVENT,
                (
                    (self.sync, key, identity, event, now, *found_by, once)
                    for key, identity, event, *found_by, once in adopted.select(
                        *columns, "once_per"
                    ).iter_rows()
                ),
            )
            for event, names in once_per.items():
                today = once_per_signature(names)
                self._db.execute(
                    "UPDATE event_once_per SET retired = 1 WHERE sync = ? AND event = ? "
                    "AND columns != ?",
                    (self.sync, event, today),
                )
                self._db.execute(INSERT_ONCE_PER, (self.sync, event, today))

    def learn(self, learned: pl.DataFrame) -> None:
        """Give delivered occurrences the identifiers they now also carry (`Mapped.learned`),
        so that they are found by either later, whichever of the two changes then."""
        if learned.is_empty():
            return
        with self._transaction():
            self._db.executemany(
                LEARN,
                (
                    learn_params(self.sync, row)
                    for row in learned.select("by", "key_email", "key_user", "email", "user_id")
                    .unique()
                    .iter_rows()
                ),
            )

    def holds_sync(self) -> bool:
        """Whether the ledger holds anything of this sync: a contact, an event or a run. A sync
        it holds nothing of is about to send everything (`sync.first_run`)."""
        return any(
            self._db.execute(
                f"SELECT 1 FROM {table} WHERE sync = ? LIMIT 1",  # noqa: S608  # constants
                (self.sync,),
            ).fetchone()
            for table in ("contacts", "events", "runs")
        )

    def syncs(self) -> list[str]:
        """The names of every sync the ledger holds contacts, events or runs of, sorted. Each
        table is walked by its index a name at a time: a million rows of one sync cost a few
        lookups, not a scan."""
        return [row[0] for row in self._db.execute(SYNC_NAMES).fetchall()]

    def delivered_contacts(self) -> pl.DataFrame:
        return self._frame(
            "SELECT identity, hash, props FROM contacts WHERE sync = ?",
            {"identity": pl.String, "hash": pl.String, "props": pl.String},
        )

    def delivered_events(self) -> pl.DataFrame:
        """Every key a delivered occurrence is known by, each once."""
        return self._frame(
            """SELECT key FROM events WHERE sync = ?
               UNION ALL SELECT key_email FROM events
                   WHERE sync = ? AND key_email IS NOT NULL AND key_email != key
               UNION ALL SELECT key_user FROM events
                   WHERE sync = ? AND key_user IS NOT NULL AND key_user != key""",
            {"key": pl.String},
            (self.sync,) * 3,
        )

    def failures(self) -> pl.DataFrame:
        return self._frame(
            "SELECT kind, ref, attempts, last_error FROM failures WHERE sync = ?",
            {"kind": pl.String, "ref": pl.String, "attempts": pl.Int64, "last_error": pl.String},
        )

    def _frame(
        self, query: str, schema: dict[str, Any], params: tuple[Any, ...] | None = None
    ) -> pl.DataFrame:
        """A bounded batch of Python rows at a time: a million rows at once raised the peak by
        about 115 MB (measured), memory the process then keeps for the rest of the run."""
        batches = self._db.batches(query, params or (self.sync,))
        frames = [pl.DataFrame(rows, schema=schema, orient="row") for rows in batches]
        return pl.concat(frames) if frames else pl.DataFrame(schema=schema)

    # --- writing, as Loops confirms -----------------------------------------------------------

    def contact_delivered(
        self, identity: str, payload_hash: str, props: Iterable[str] | None = None
    ) -> None:
        """`props`: the top-level keys of the body delivered, so that a later run can tell which
        values Loops keeps that the source no longer has (`empty: skip`)."""
        self._queue(
            "INSERT INTO contacts (sync, identity, hash, delivered_at, props)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (sync, identity) DO UPDATE SET"
            " hash = excluded.hash, delivered_at = excluded.delivered_at, props = excluded.props,"
            " removed = NULL, removed_at = NULL",
            (
                self.sync,
                identity,
                payload_hash,
                time.time(),
                None if props is None else "," + ",".join(sorted(props)) + ",",
            ),
        )
        self._queue(
            "DELETE FROM failures WHERE sync = ? AND kind = 'contact' AND ref = ?",
            (self.sync, identity),
        )

    def contact_removed(self, identity: str, action: str) -> None:
        """A contact that left the source was unsubscribed, taken off the lists or deleted
        (`contact.removed`). Kept (but for a deletion) so that it is not removed again, with a
        hash no payload has: if it comes back, it is upserted again."""
        if action == "delete":
            self._queue(
                "DELETE FROM contacts WHERE sync = ? AND identity = ?", (self.sync, identity)
            )
        else:
            self._queue(
                "UPDATE contacts SET removed = ?, removed_at = ?, hash = ?"
                " WHERE sync = ? AND identity = ?",
                (action, time.time(), f"removed:{action}", self.sync, identity),
            )
        self._queue(
            "DELETE FROM failures WHERE sync = ? AND kind = 'removal' AND ref = ?",
            (self.sync, identity),
        )

    def event_delivered(
        self, key: str, identity: str, event: str, occurrence: Occurrence | None = None
    ) -> None:
        """Committed at once, unlike contacts: Loops forgets an Idempotency-Key after 24 hours,
        so an event lost from an unflushed batch by a SIGKILL, then re-sent by a run a day later,
        would be delivered twice. A commit costs about 35 µs here, a request milliseconds.

        `occurrence`: the identifiers it was delivered with, by which later runs find it."""
        found_by = occurrence or Occurrence()
        if found_by.once_per is not None:
            self._queue(
                INSERT_ONCE_PER,
                (self.sync, event, once_per_signature(orjson.loads(found_by.once_per))),
            )
        self._queue(
            INSERT_EVENT,
            (
                self.sync,
                key,
                identity,
                event,
                time.time(),
                found_by.key_email,
                found_by.key_user,
                found_by.email,
                found_by.user_id,
                found_by.once_per,
            ),
        )
        self._queue(
            "DELETE FROM failures WHERE sync = ? AND kind = 'event' AND ref = ?", (self.sync, key)
        )
        if self._events_at_once:
            self.flush()

    @contextmanager
    def events_batched(self) -> Iterator[None]:
        """Inside, delivered events are committed in batches, as contacts are, and batches are
        larger (BATCHED_FLUSH_EVERY): for writes no request stands behind (`run --baseline`,
        which sends nothing), where a commit per event would cost a round trip each (a million
        events: hours against PostgreSQL)."""
        self._events_at_once = False
        try:
            yield
            self.flush()
        finally:
            self._events_at_once = True

    def request_failed(self, kind: Kind, ref: str, error: str) -> None:
        self._queue(
            """INSERT INTO failures (sync, kind, ref, attempts, last_error, updated_at)
               VALUES (?, ?, ?, 1, ?, ?)
               ON CONFLICT (sync, kind, ref) DO UPDATE SET attempts = failures.attempts + 1,
               last_error = excluded.last_error, updated_at = excluded.updated_at""",
            (self.sync, kind, ref, error[:500], time.time()),
        )

    def _queue(self, statement: str, params: tuple[Any, ...]) -> None:
        self._pending.append((statement, params))
        if self._events_at_once:
            due = time.monotonic() - self._last_flush >= FLUSH_SECONDS
            if len(self._pending) >= FLUSH_EVERY or due:
                self.flush()
        elif len(self._pending) >= BATCHED_FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Commit what Loops confirmed so far, in one transaction. The batch is let go only once
        committed: a failed commit raises LedgerError and the next flush tries it again."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        with self._transaction():
            self._db.execute_all(self._pending)
        self._pending.clear()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, rolled back whole on any error; a ledger that cannot be
        written (disk full, read-only, locked beyond the busy timeout, a server gone) raises
        LedgerError."""
        try:
            with self._db.transaction():
                yield
        except self._db.errors as error:
            raise LedgerError(
                f"cannot write the ledger {self.where} ({error}): sending stopped. Make room or "
                "make it writable, then run again within 24 hours: Loops still recognises, by "
                "their Idempotency-Key, the events this run delivered but could not record"
            ) from error

    # --- runs ---------------------------------------------------------------------------------

    def start_run(self, config_hash: str) -> int:
        """Record a new run; call it holding the sync's lock. Earlier runs of the sync still
        marked running cannot be (the lock was free): they died, and are marked so."""
        with self._transaction():
            self._db.execute(
                "UPDATE runs SET status = 'died', reason = ? WHERE sync = ? AND status = 'running'",
                (DIED, self.sync),
            )
            return self._db.insert(
                "INSERT INTO runs (sync, started_at, config_hash) VALUES (?, ?, ?) RETURNING id",
                (self.sync, time.time(), config_hash),
            )

    def finish_run(
        self,
        run_id: int,
        exit_code: int,
        counts: dict[str, Any],
        *,
        status: RunStatus = "finished",
        reason: str | None = None,
    ) -> None:
        """Close the run's record, after committing what is still pending."""
        self.flush()
        with self._transaction():
            self._db.execute(
                "UPDATE runs SET ended_at = ?, exit_code = ?, counts = ?, status = ?, reason = ? "
                "WHERE id = ?",
                (
                    time.time(),
                    exit_code,
                    json.dumps(counts, sort_keys=True),
                    status,
                    reason,
                    run_id,
                ),
            )

    def runs(self, limit: int = 20) -> list[RunRecord]:
        rows = self._db.execute(
            "SELECT id, started_at, ended_at, exit_code, counts, status, reason FROM runs "
            "WHERE sync = ? ORDER BY started_at DESC, id DESC LIMIT ?",
            (self.sync, limit),
        ).fetchall()
        return [
            RunRecord(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else {}, r[5], r[6])
            for r in rows
        ]
