"""What the emulated Loops team holds, and what the emulator saw.

Two kinds of state live here:

* the team's data, as Loops would keep it: contacts, custom contact properties, accepted
  events and the idempotency keys already used (with when they were used);
* observations for tests and demos: the request log and the counters.

The team's data can be written through to a SQLite file so that a demo or a user's dry run
survives a restart; the observations are per run and stay in memory. Time comes from an
injectable clock plus an offset that tests can advance, so "24 hours later" costs nothing.

Contacts are stored as plain dicts in the shape Loops returns them (see `render_contact`), which
keeps the endpoint code, the inspection API and the database format the same thing.
"""

from __future__ import annotations

import secrets
import sqlite3
import string
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

Contact = dict[str, Any]
JsonObject = dict[str, Any]

IDEMPOTENCY_WINDOW_SECONDS = 24 * 60 * 60
DEFAULT_REQUEST_LOG_SIZE = 100_000

# Counters always present in the snapshot, even at zero, so callers can index them directly.
ALWAYS_COUNTED = ("requests", "200", "400", "401", "404", "409", "429", "500", "dropped", "hung")

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_contact_id() -> str:
    """An id shaped like Loops' (a 25-character cuid): 'c' and 24 base-36 characters."""
    return "c" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def email_key(email: str) -> str:
    """How emails are compared.

    The docs don't say whether Loops matches emails case-insensitively. Matching them
    case-insensitively is the stricter choice for a client: `Ann@x.com` and `ann@x.com` are then
    the same contact, so a sync that treats them as two rows sees them overwrite each other here
    instead of in production.
    """
    return email.lower()


def render_contact(contact: Contact) -> Contact:
    """The contact as Loops returns it from `contacts/find`: defaults filled, custom keys after."""
    rendered: Contact = {
        "id": contact["id"],
        "email": contact.get("email") or "",
        "firstName": contact.get("firstName"),
        "lastName": contact.get("lastName"),
        # The spec types these two as plain strings (never null): an unset one reads as "".
        "source": contact.get("source") or "",
        "subscribed": bool(contact.get("subscribed", True)),
        "userGroup": contact.get("userGroup") or "",
        "userId": contact.get("userId"),
        "mailingLists": {
            list_id: True for list_id, on in contact.get("mailingLists", {}).items() if on
        },
        "optInStatus": contact.get("optInStatus"),
    }
    for key, value in contact.items():
        if key not in rendered:
            rendered[key] = value
    return rendered


class _SqliteStore:
    """Write-through persistence of the team's data, one JSON document per row.

    A request's changes are written in one transaction (`transaction()`), so a crash loses at
    most the request being answered, never half of it. The connection is shared with the server
    thread, hence the lock (reentrant: a transaction holds it across its statements).
    """

    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS contacts (id TEXT PRIMARY KEY, data TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS properties (name TEXT PRIMARY KEY, type TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY, used_at REAL NOT NULL);
    """

    def __init__(self, path: Path) -> None:
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(self._SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _write(self, sql: str, params: Iterable[Any] = ()) -> None:
        with self._lock:
            self._conn.execute(sql, tuple(params))

    def load_contacts(self) -> list[Contact]:
        with self._lock:
            rows = self._conn.execute("SELECT data FROM contacts ORDER BY rowid").fetchall()
        return [orjson.loads(data) for (data,) in rows]

    def load_properties(self) -> dict[str, str]:
        with self._lock:
            rows = self._conn.execute("SELECT name, type FROM properties ORDER BY rowid").fetchall()
        return {str(name): str(kind) for name, kind in rows}

    def load_events(self) -> list[JsonObject]:
        with self._lock:
            rows = self._conn.execute("SELECT data FROM events ORDER BY seq").fetchall()
        return [orjson.loads(data) for (data,) in rows]

    def load_idempotency_keys(self) -> dict[str, float]:
        with self._lock:
            rows = self._conn.execute("SELECT key, used_at FROM idempotency_keys").fetchall()
        return {str(key): float(used_at) for key, used_at in rows}

    def put_contact(self, contact: Contact) -> None:
        self._write(
            "INSERT INTO contacts (id, data) VALUES (?, ?) "
            "ON CONFLICT(id) DO UPDATE SET data = excluded.data",
            (contact["id"], orjson.dumps(contact).decode()),
        )

    def delete_contact(self, contact_id: str) -> None:
        self._write("DELETE FROM contacts WHERE id = ?", (contact_id,))

    def put_property(self, name: str, kind: str) -> None:
        self._write(
            "INSERT INTO properties (name, type) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET type = excluded.type",
            (name, kind),
        )

    def add_event(self, event: JsonObject) -> None:
        self._write("INSERT INTO events (data) VALUES (?)", (orjson.dumps(event).decode(),))

    def put_idempotency_key(self, key: str, used_at: float) -> None:
        self._write(
            "INSERT INTO idempotency_keys (key, used_at) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET used_at = excluded.used_at",
            (key, used_at),
        )

    def clear(self) -> None:
        with self._lock:
            for table in ("contacts", "properties", "events", "idempotency_keys"):
                self._conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class EmulatorState:
    """The emulated team's data plus the run's observations.

    Not thread-safe by itself: the app touches it only from the server's event loop, and
    handlers never await between reading and writing it, so each request applies atomically.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        db: Path | None = None,
        request_log_size: int = DEFAULT_REQUEST_LOG_SIZE,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self._clock = clock
        self._seeds = dict(properties or {})
        self._offset = 0.0
        self._contacts: dict[str, Contact] = {}
        self._by_email: dict[str, str] = {}
        self._by_user_id: dict[str, str] = {}
        self._custom_properties: dict[str, str] = {}
        self._events: list[JsonObject] = []
        self._idempotency_keys: dict[str, float] = {}
        # Bounded so a long benchmark doesn't grow without limit; 0 keeps everything.
        self._requests: deque[JsonObject] = deque(maxlen=request_log_size or None)
        self._counters: Counter[str] = Counter()
        self._path_counts: Counter[str] = Counter()
        self._store = _SqliteStore(db) if db is not None else None
        if self._store is not None:
            self._load(self._store)
        self._seed()

    def _load(self, store: _SqliteStore) -> None:
        for contact in store.load_contacts():
            self._index(contact)
        self._custom_properties = store.load_properties()
        self._events = store.load_events()
        self._idempotency_keys = store.load_idempotency_keys()

    # --- time -------------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the epoch, as the emulator sees them (injected clock + advances)."""
        return self._clock() + self._offset

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's time forward (not persisted: a restart is back to the clock)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds
        return self.now()

    # --- contacts ---------------------------------------------------------------------------

    def _copy(self, contact_id: str | None) -> Contact | None:
        # A copy, so a caller changing it can't bypass save_contact (and its indexes).
        if contact_id is None:
            return None
        contact = self._contacts[contact_id]
        return {**contact, "mailingLists": dict(contact.get("mailingLists", {}))}

    def contact_by_email(self, email: str) -> Contact | None:
        return self._copy(self._by_email.get(email_key(email)))

    def contact_by_user_id(self, user_id: str) -> Contact | None:
        return self._copy(self._by_user_id.get(user_id))

    def contacts(self) -> list[Contact]:
        return [render_contact(contact) for contact in self._contacts.values()]

    def _unindex(self, contact_id: str) -> None:
        old = self._contacts.get(contact_id)
        if old is None:
            return
        if old.get("email"):
            self._by_email.pop(email_key(old["email"]), None)
        if old.get("userId"):
            self._by_user_id.pop(old["userId"], None)

    def _index(self, contact: Contact) -> None:
        self._contacts[contact["id"]] = contact
        if contact.get("email"):
            self._by_email[email_key(contact["email"])] = contact["id"]
        if contact.get("userId"):
            self._by_user_id[contact["userId"]] = contact["id"]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The writes of one request, all or none (a no-op in memory)."""
        if self._store is None:
            yield
            return
        with self._store.transaction():
            yield

    def save_contact(self, contact: Contact) -> None:
        """Insert or replace a contact (by id), keeping the email and userId indexes right.

        Contacts keep their creation order (in memory as in the database), so listings are
        stable across updates and restarts.
        """
        self._unindex(contact["id"])
        self._index(contact)
        if self._store is not None:
            self._store.put_contact(contact)

    def delete_contact(self, contact_id: str) -> None:
        self._unindex(contact_id)
        self._contacts.pop(contact_id, None)
        if self._store is not None:
            self._store.delete_contact(contact_id)

    # --- custom properties ------------------------------------------------------------------

    def custom_properties(self) -> dict[str, str]:
        """Custom property name -> type, in creation order."""
        return dict(self._custom_properties)

    def add_custom_property(self, name: str, kind: str) -> None:
        """Add a property, or change its type (never through the API: Loops support can)."""
        self._custom_properties[name] = kind
        if self._store is not None:
            self._store.put_property(name, kind)

    def _seed(self) -> None:
        """The starting properties, those the team lacks (a database may hold them already)."""
        for name, kind in self._seeds.items():
            if name not in self._custom_properties:
                self.add_custom_property(name, kind)

    # --- events and idempotency -------------------------------------------------------------

    def idempotency_key_in_use(self, key: str) -> bool:
        """True when `key` was used by an accepted request less than 24 hours ago."""
        used_at = self._idempotency_keys.get(key)
        return used_at is not None and self.now() - used_at < IDEMPOTENCY_WINDOW_SECONDS

    def remember_idempotency_key(self, key: str) -> None:
        now = self.now()
        self._idempotency_keys[key] = now
        if self._store is not None:
            self._store.put_idempotency_key(key, now)

    def record_event(self, event: JsonObject) -> None:
        self._events.append(event)
        if self._store is not None:
            self._store.add_event(event)

    def events(self) -> list[JsonObject]:
        return list(self._events)

    # --- observations -----------------------------------------------------------------------

    def record_request(self, entry: JsonObject) -> None:
        """Log one API request (never its credentials) and count it."""
        self._requests.append(entry)
        self._counters["requests"] += 1
        self._path_counts[entry["path"]] += 1
        if entry.get("status") is not None:
            self._counters[str(entry["status"])] += 1
        if entry.get("fault") == "drop":
            self._counters["dropped"] += 1
        elif entry.get("fault") == "hang":
            self._counters["hung"] += 1

    def record_status(self, entry: JsonObject, status: int) -> None:
        """The answer of a request logged before it was answered (a hang that ended)."""
        entry["status"] = status
        self._counters[str(status)] += 1

    def requests(self) -> list[JsonObject]:
        return list(self._requests)

    def counters(self) -> JsonObject:
        snapshot: JsonObject = dict.fromkeys(ALWAYS_COUNTED, 0)
        snapshot.update(sorted(self._counters.items()))
        snapshot["paths"] = dict(sorted(self._path_counts.items()))
        return snapshot

    # --- lifecycle --------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything, including what the database file holds."""
        self._offset = 0.0
        self._contacts.clear()
        self._by_email.clear()
        self._by_user_id.clear()
        self._custom_properties.clear()
        self._events.clear()
        self._idempotency_keys.clear()
        self._requests.clear()
        self._counters.clear()
        self._path_counts.clear()
        if self._store is not None:
            self._store.clear()
        self._seed()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
