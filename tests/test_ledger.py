"""The ledger keeps only what Loops confirmed, survives reopening, and locks one run at a time."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync import mapping, snapshot
from sync.candidates import Mapped, map_rows
from sync.columns import ROW
from sync.config_model import SyncConfig
from sync.delivery import record_delivered
from sync.errors import ExitCode, LedgerError, LockedError, SourceError
from sync.held import Held
from sync.ledger import Ledger
from sync.ledger_db import Db, PgState, open_db
from sync.ledger_schema import MIGRATIONS, PG_MIGRATIONS, SCHEMA_VERSION
from sync.ledger_sql import INSERT_EVENT, LEARN, learn_params
from sync.lock import hold_lock
from sync.model import Occurrence, Request
from sync.plan import make_plan
from sync.state import StateDir
from tests.ledger_backends import (
    Place,
    Places,
    drop_schema,
    fresh_sync,
    new_pg_state,
    place,
    places,
    require_postgres,
)

__all__ = ["place", "places"]  # the fixtures: every test of a ledger runs on both backends

SPEC = SyncConfig.model_validate(
    {
        "name": "t",
        "source": {"csv": "x.csv"},
        "contact": {"email": "email", "properties": {"plan": "plan"}},
        "events": [{"name": "signup", "email": "email"}],
    }
)


def mapped(rows: list[tuple[str, str]], held: Held | None = None) -> Mapped:
    frame = pl.DataFrame(rows, schema=["email", "plan"], orient="row").with_row_index(ROW, offset=1)
    return map_rows(SPEC, frame, held=held)


def deliver_all(ledger: Ledger, plan_frame: pl.DataFrame) -> None:
    columns = plan_frame.select("kind", "identity", "ref", "event")
    for kind, identity, ref, event in columns.iter_rows():
        if kind == "contact":
            ledger.contact_delivered(identity, ref)
        else:
            ledger.event_delivered(ref, identity, event)
    ledger.flush()


def test_plan_sends_only_new_changed_and_failed(place: Place) -> None:
    ledger = Ledger(place, "t")
    first = make_plan(mapped([("a@x.io", "free"), ("b@x.io", "free")]), ledger.held())
    assert first.counts["contacts_new"] == 2
    assert first.counts["events_new"] == 2
    deliver_all(ledger, first.requests)

    rows = [("a@x.io", "free"), ("b@x.io", "pro"), ("c@x.io", "free")]
    second = make_plan(mapped(rows), ledger.held())
    assert second.counts == {
        "contacts_new": 1,
        "contacts_changed": 1,
        "contacts_unchanged": 1,
        "contacts_retry": 0,
        "events_new": 1,
        "events_retry": 0,
        "events_already_delivered": 2,
        "folded": 1,  # c's upsert rides on its signup event
    }
    sent = second.requests.select("kind", "identity").rows()
    assert sent == [("contact", "e:b@x.io"), ("contact", "e:c@x.io"), ("event", "e:c@x.io")]


def test_a_failed_contact_is_retried_and_then_forgotten(place: Place) -> None:
    ledger = Ledger(place, "t")
    ledger.request_failed("contact", "e:a@x.io", "HTTP 500")
    ledger.flush()
    plan = make_plan(mapped([("a@x.io", "free")]), ledger.held())
    assert plan.counts["contacts_retry"] == 1
    deliver_all(ledger, plan.requests)
    assert ledger.failures().is_empty()


def test_full_resends_contacts_but_never_events(place: Place) -> None:
    ledger = Ledger(place, "t")
    deliver_all(ledger, make_plan(mapped([("a@x.io", "free")]), ledger.held()).requests)
    again = make_plan(mapped([("a@x.io", "free")]), ledger.held(), full=True)
    assert again.requests.get_column("kind").to_list() == ["contact"]
    assert again.counts["contacts_changed"] == 1


def test_writes_are_batched_and_unflushed_ones_are_lost_harmlessly(place: Place) -> None:
    path = place
    ledger = Ledger(path, "t")
    ledger.contact_delivered("e:a@x.io", "c1:aaa")
    other = Ledger(path, "t")
    assert other.delivered_contacts().is_empty()  # not committed yet: a crash would re-send it
    ledger.flush()
    assert other.delivered_contacts().rows() == [("e:a@x.io", "c1:aaa", None)]


def test_each_kind_of_request_is_recorded_as_what_loops_now_holds(place: Place) -> None:
    """What the recorder and `run --baseline` write: an upsert's hash, an event's key, and a
    removal as the contact's removal (not as an event keyed by the action)."""
    ledger = Ledger(place, "t")
    upsert = Request("contact", 1, "e:a@x.io", "c1:aaa", b'{"email":"a@x.io"}')
    record_delivered(ledger, upsert)
    record_delivered(ledger, Request("event", 1, "e:a@x.io", "ls2-x", b"{}", event="signup"))
    ledger.flush()
    assert ledger.delivered_events().rows() == [("ls2-x",)]
    assert ledger.delivered_contacts().rows() == [("e:a@x.io", "c1:aaa", ",email,")]

    record_delivered(ledger, Request("removal", 0, "e:a@x.io", "unsubscribe", b"{}"))
    ledger.flush()
    assert ledger.delivered_events().rows() == [("ls2-x",)]
    assert ledger.delivered_contacts().get_column("hash").to_list() == ["removed:unsubscribe"]


def test_syncs_sharing_a_ledger_file_do_not_see_each_other(place: Place) -> None:
    path = place
    one = Ledger(path, "one")
    one.event_delivered("ls2-x", "e:a@x.io", "signup")
    one.flush()
    assert Ledger(path, "two").delivered_events().is_empty()
    assert Ledger(path, "one").delivered_events().rows() == [("ls2-x",)]


def test_schema_version_is_recorded_and_a_newer_one_refused(place: Place) -> None:
    path = place
    Ledger(path, "t").close()
    db = open_db(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(len(db.migrations)),
    )
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(SourceError, match="newer loops-sync"):
        Ledger(path, "t")


def test_runs_are_recorded_for_history(place: Place) -> None:
    ledger = Ledger(place, "t")
    run_id = ledger.start_run("cfg")
    assert ledger.runs()[0].status == "running"
    ledger.finish_run(run_id, 1, {"contacts_sent": 3}, reason="2 rows rejected, 0 failed")
    [run] = ledger.runs()
    assert run.exit_code == 1
    assert run.counts == {"contacts_sent": 3}
    assert run.ended_at is not None
    assert (run.status, run.reason) == ("finished", "2 rows rejected, 0 failed")


def test_a_run_that_never_ended_is_marked_died_when_the_next_one_starts(place: Place) -> None:
    """Killed, out of memory, a crash: its record says running until a run takes the lock."""
    ledger = Ledger(place, "t")
    ledger.start_run("cfg")  # then SIGKILL: never finished
    Ledger(place, "other").start_run("cfg")  # another sync's run: no effect
    assert ledger.runs()[0].status == "running"
    ledger.start_run("cfg")
    now, dead = ledger.runs()
    assert now.status == "running"
    assert dead.status == "died"
    assert dead.reason is not None
    assert dead.reason.startswith("died: no end was recorded")
    assert (dead.ended_at, dead.exit_code) == (None, None)


def test_a_failed_run_keeps_the_reason_it_failed(place: Place) -> None:
    ledger = Ledger(place, "t")
    run_id = ledger.start_run("cfg")
    reason = "Loops refused the API key (HTTP 401)"
    ledger.finish_run(run_id, ExitCode.FATAL_API, {}, status="failed", reason=reason)
    ledger.start_run("cfg")  # a run that ended is not marked died
    [_, run] = ledger.runs()
    assert (run.status, run.reason, run.exit_code) == ("failed", reason, 3)


def test_a_version_1_ledger_keeps_its_runs_and_marks_the_unended_ones_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite"
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0])
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    old.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    old.execute("INSERT INTO runs VALUES (1, 't', 100.0, 160.0, 0, 'cfg', '{\"requests\": 5}')")
    old.execute("INSERT INTO runs VALUES (2, 't', 200.0, NULL, NULL, 'cfg', NULL)")
    old.commit()
    old.close()
    ledger = Ledger(path, "t")
    running, finished = ledger.runs()
    assert (finished.status, finished.exit_code, finished.counts) == (
        "finished",
        0,
        {"requests": 5},
    )
    assert running.status == "running"
    ledger.start_run("cfg")
    assert [run.status for run in ledger.runs()] == ["running", "died", "finished"]


class FailingCommits:
    """A ledger connection whose commits fail while `failing` is set, as on a full disk: the
    transaction's statements run, then the database refuses it and it is rolled back."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.failing = False

    @contextmanager
    def transaction(self, *, exclusive: bool = False) -> Iterator[None]:
        with self.db.transaction(exclusive=exclusive):
            yield
            if self.failing:
                raise self.db.errors[0]("database or disk is full")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_failed_commit_keeps_its_batch_and_the_next_flush_writes_it(place: Place) -> None:
    path = place
    ledger = Ledger(path, "t")
    connection = FailingCommits(ledger._db)
    ledger._db = connection
    connection.failing = True
    ledger.contact_delivered("e:a@x.io", "c1:aaa")
    with pytest.raises(LedgerError, match="database or disk is full") as caught:
        ledger.flush()
    assert caught.value.exit_code == ExitCode.LEDGER == 6
    assert (path.where if isinstance(path, PgState) else str(path)) in str(caught.value)
    assert Ledger(path, "t").delivered_contacts().is_empty()

    connection.failing = False
    ledger.contact_delivered("e:b@x.io", "c1:bbb")
    ledger.flush()
    contacts = Ledger(path, "t").delivered_contacts().select("identity", "hash")
    assert sorted(contacts.rows()) == [("e:a@x.io", "c1:aaa"), ("e:b@x.io", "c1:bbb")]


def test_an_event_that_cannot_be_recorded_raises_at_once(place: Place) -> None:
    """Its sender must stop: a delivered event the ledger forgot is sent again next run."""
    ledger = Ledger(place, "t")
    connection = FailingCommits(ledger._db)
    ledger._db = connection
    connection.failing = True
    with pytest.raises(LedgerError):
        ledger.event_delivered("ls2-x", "e:a@x.io", "signup")
    with pytest.raises(LedgerError):
        ledger.start_run("cfg")
    connection.failing = False
    ledger.flush()  # the batch kept, written now
    assert ledger.delivered_events().rows() == [("ls2-x",)]


def state_of(tmp_path: Path, place: Place, sync: str = "t") -> StateDir:
    return StateDir(tmp_path, sync, place if isinstance(place, PgState) else None)


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path, place: Place) -> None:
    with (
        hold_lock(state_of(tmp_path, place)),
        pytest.raises(LockedError, match=r"pid \d+") as caught,
        hold_lock(state_of(tmp_path, place)),
    ):
        pass
    assert caught.value.exit_code == 4
    with hold_lock(state_of(tmp_path, place)):  # released: the next run goes ahead
        pass


def test_each_sync_has_a_lock_of_its_own(tmp_path: Path, place: Place) -> None:
    with hold_lock(state_of(tmp_path, place, "one")), hold_lock(state_of(tmp_path, place, "two")):
        pass


def test_a_dead_holders_lock_does_not_block(tmp_path: Path, place: Place) -> None:
    database = repr(place.url) if isinstance(place, PgState) else "None"
    code = (
        "import os, sys; from pathlib import Path; from sync.lock import hold_lock\n"
        "from sync.state import StateDir; from sync.ledger_db import PgState\n"
        f"database = {database} and PgState.parse({database})\n"
        f"with hold_lock(StateDir(Path({str(tmp_path)!r}), 't', database or None)): os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 9
    with hold_lock(state_of(tmp_path, place)):
        pass


def test_rows_loops_already_holds_are_counted_not_kept(place: Place) -> None:
    """Only what will be sent keeps a body: a big unchanged table costs a count, not bodies."""
    ledger = Ledger(place, "t")
    rows = [("a@x.io", "free"), ("b@x.io", "free"), ("d@x.io", "free")]
    deliver_all(ledger, make_plan(mapped(rows), ledger.held()).requests)
    ledger.request_failed("contact", "e:b@x.io", "HTTP 500")
    ledger.flush()
    rows = [("a@x.io", "free"), ("b@x.io", "free"), ("c@x.io", "pro"), ("d@x.io", "pro")]
    again = mapped(rows, ledger.held())
    kept = dict(again.contacts.select("identity", pl.col("body").is_not_null()).iter_rows())
    assert kept == {"e:b@x.io": True, "e:c@x.io": True, "e:d@x.io": True}  # b failed: retried
    events = dict(again.events.select("identity", pl.col("body").is_not_null()).iter_rows())
    assert events == {"e:b@x.io": False, "e:c@x.io": True, "e:d@x.io": False}
    assert (again.contacts_settled, again.events_settled) == (1, 1)  # a, whole
    plan = make_plan(again, ledger.held())
    assert sorted(plan.requests.get_column("identity").to_list()) == [
        "e:b@x.io",
        "e:c@x.io",
        "e:c@x.io",
        "e:d@x.io",
    ]
    # The same counts as a plan made without setting anything aside.
    assert plan.counts == make_plan(mapped(rows), ledger.held()).counts


def test_a_settled_last_row_wins_over_an_earlier_changed_one(place: Place) -> None:
    """The last row of an identity wins even when Loops already holds it: nothing is sent."""
    ledger = Ledger(place, "t")
    deliver_all(ledger, make_plan(mapped([("a@x.io", "free")]), ledger.held()).requests)
    rows = [("a@x.io", "pro"), ("b@x.io", "free"), ("a@x.io", "free")]
    again = mapped(rows, ledger.held())
    plan = make_plan(again, ledger.held())
    assert plan.requests.get_column("identity").unique().to_list() == ["e:b@x.io"]
    assert again.duplicates == 1
    assert plan.counts == make_plan(mapped(rows), ledger.held()).counts


ROWS = st.lists(
    st.tuples(st.sampled_from(["a@x.io", "b@x.io", "c@x.io", "bad"]), st.sampled_from("fp")),
    max_size=12,
)


SHAPES = [
    SPEC,
    SyncConfig.model_validate(  # events only, one of them only on some rows
        {
            "name": "t",
            "source": {"csv": "x.csv"},
            "events": [
                {"name": "signup", "email": "email"},
                {"name": "upgraded", "email": "email", "when": "plan = 'p'"},
            ],
        }
    ),
    SyncConfig.model_validate(  # a contact only, whose empty cells clear
        {
            "name": "t",
            "source": {"csv": "x.csv"},
            "contact": {"email": "email", "properties": {"plan": "plan"}, "empty": "clear"},
        }
    ),
]


@pytest.mark.parametrize("spec", SHAPES, ids=["contact+event", "events", "contact"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=ROWS, now=ROWS, failed=st.sets(st.sampled_from(["e:a@x.io", "e:b@x.io"])))
def test_setting_rows_aside_while_mapping_changes_no_plan(
    places: Places,
    spec: SyncConfig,
    before: list[tuple[str, str]],
    now: list[tuple[str, str]],
    failed: set[str],
) -> None:
    """Mapping with the ledger's snapshot (rows Loops holds set aside, slices of 3 rows, built a
    slice ahead) plans the same requests and counts as mapping without it."""

    def mapped_as(rows: list[tuple[str, str]], held: Held | None = None) -> Mapped:
        frame = pl.DataFrame(rows, schema=["email", "plan"], orient="row")
        return map_rows(spec, frame.with_row_index(ROW, offset=1), held=held)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mapping, "SLICE_ROWS", 3)
        ledger = Ledger(places.shared(), fresh_sync())
        deliver_all(ledger, make_plan(mapped_as(before), ledger.held()).requests)
        for identity in failed:
            ledger.request_failed("contact", identity, "HTTP 500")
        ledger.flush()
        held = ledger.held()
        for full in (False, True):
            skip = held.without_contacts() if full else held
            aside, whole = mapped_as(now, skip), mapped_as(now)
            planned, reference = (make_plan(m, held, full=full) for m in (aside, whole))
            assert planned.requests.rows() == reference.requests.rows()
            assert planned.counts == reference.counts
            assert aside.rejects.rows() == whole.rejects.rows()
            assert aside.duplicates == whole.duplicates
        ledger.close()


def test_a_state_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file, not a folder")
    with pytest.raises(SourceError, match="LOOPS_SYNC_STATE") as caught:
        Ledger(blocker / "ledger.sqlite", "t")
    assert caught.value.exit_code == 2
    with pytest.raises(SourceError, match="state directory"), hold_lock(StateDir(blocker, "t")):
        pass


def test_a_delivered_event_is_committed_at_once(place: Place) -> None:
    """A SIGKILL must not lose it: re-sent a day later, Loops would no longer answer 409."""
    path = place
    Ledger(path, "t").event_delivered("ls2-x", "e:a@x.io", "signup")  # never flushed or closed
    assert Ledger(path, "t").delivered_events().rows() == [("ls2-x",)]


def test_two_runs_opening_an_old_ledger_at_once_migrate_it_once(place: Place) -> None:
    """`plan` and `run` started together on a ledger from an older version (in PostgreSQL, a
    schema not made yet): one migrates, the other waits and finds it done (no 'duplicate
    column' half-way)."""
    path = place
    if isinstance(path, Path):
        path.parent.mkdir()
        old = sqlite3.connect(path)
        old.executescript(MIGRATIONS[0])
        old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        old.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        old.commit()
        old.close()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            Ledger(path, "t").close()
        except BaseException as error:  # noqa: BLE001  # collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    db = open_db(path)
    assert db.schema_version() == len(db.migrations)
    assert len(db.migrations) == (
        len(PG_MIGRATIONS) if isinstance(path, PgState) else SCHEMA_VERSION
    )
    db.close()


def test_learning_identifiers_finds_each_event_by_index_not_by_a_scan(tmp_path: Path) -> None:
    """A config that gains `user_id:` makes every delivered occurrence learn its user id at
    once: a table scan per occurrence would be a million scans of a million rows."""
    ledger = Ledger(tmp_path / "ledger.sqlite", "t")
    query = sqlite3.connect(tmp_path / "ledger.sqlite")
    params = learn_params("t", ("k", "e", "u", "a", "1"))
    plan = query.execute("EXPLAIN QUERY PLAN " + LEARN, params).fetchall()
    steps = [str(row[-1]) for row in plan]
    # Found by each key through an index, not by reading every event of the sync.
    assert "SEARCH events USING PRIMARY KEY (sync=?)" not in steps, steps
    assert not any(step.startswith("SCAN") for step in steps), steps
    ledger.close()


def test_learning_identifiers_in_postgresql_reads_events_by_index() -> None:
    """The same in PostgreSQL, whose planner goes by the table's statistics: a ledger of a few
    thousand events, analysed."""
    require_postgres()
    state = new_pg_state()
    try:
        ledger = Ledger(state, "t")
        db = ledger._db
        rows = [
            ("t", f"k{n}", f"e:{n}@x.io", "signup", 0.0, f"ke{n}", f"ku{n}", None, None, None)
            for n in range(5000)
        ]
        db.executemany(INSERT_EVENT, rows)
        db.execute("ANALYZE events")
        params = learn_params("t", ("k1", "e", "u", "a", "1"))
        plan = "\n".join(row[0] for row in db.execute("EXPLAIN " + LEARN, params).fetchall())
        assert "Seq Scan" not in plan, plan
        conditions = [line.strip() for line in plan.splitlines() if "Index Cond" in line]
        # Each lookup, and the update itself, by sync and key: none reads the sync's every event.
        assert len(conditions) == 4, plan
        assert all("AND" in condition for condition in conditions), plan
        ledger.close()
    finally:
        drop_schema(state)


def digest_text(scheme: str, seed: int) -> str:
    return scheme + hashlib.sha256(str(seed).encode()).hexdigest()


LEDGER_HASHES = st.one_of(
    st.integers(0, 30).map(lambda n: digest_text("c1:", n)),
    st.sampled_from(["c1:aaa", "c1:a\x1eb", ""]),  # a value holding the page separator
)
LEDGER_KEYS = st.one_of(
    st.integers(0, 30).map(lambda n: digest_text("ls2-", n)),
    st.integers(0, 5).map(lambda n: digest_text("ls1-", n)),
    st.sampled_from(["ls2-x", "ls2-\x1e"]),
)
LEDGER_IDENTITIES = st.sampled_from(["e:a@x.io", "e:b@x.io", "u:1", "u:2", "e:c@x.io", "e:d"])
EVENTS = st.tuples(LEDGER_KEYS, LEDGER_IDENTITIES, st.none() | LEDGER_KEYS, st.none() | LEDGER_KEYS)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    contacts=st.lists(
        st.tuples(LEDGER_IDENTITIES, LEDGER_HASHES, st.none() | st.sampled_from(["email", "plan"]))
    ),
    events=st.lists(EVENTS),
    failures=st.lists(st.tuples(st.sampled_from(["contact", "event"]), LEDGER_IDENTITIES)),
    page=st.integers(1, 4),
    asked=st.lists(st.one_of(LEDGER_HASHES, LEDGER_KEYS, LEDGER_IDENTITIES), max_size=15),
)
def test_the_ledgers_held_answers_as_its_tables_do(
    places: Places,
    *,
    contacts: list[tuple[str, str, str | None]],
    events: list[tuple[str, str, str | None, str | None]],
    failures: list[tuple[Literal["contact", "event"], str]],
    page: int,
    asked: list[str],
) -> None:
    """Read a page of `page` rows at a time, `page` identities asked at once: every payload
    hash, every key an occurrence is known by, failures, props and known contacts, as plain
    queries of the ledger's tables find them; another sync's rows unseen."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(snapshot, "PAGE_ROWS", page)
        patch.setattr(snapshot, "ASKED_AT_ONCE", page)
        path, sync = places.shared(), fresh_sync()
        ledger, other = Ledger(path, sync), Ledger(path, fresh_sync("other"))
        for identity, payload_hash, prop in contacts:
            ledger.contact_delivered(identity, payload_hash, None if prop is None else [prop])
            other.contact_delivered(identity + "-other", payload_hash + "-other")
        for key, identity, key_email, key_user in events:
            found_by = Occurrence(key_email=key_email, key_user=key_user)
            ledger.event_delivered(key, identity, "signup", found_by)
            other.event_delivered(key + "-other", identity, "signup")
        for kind, ref in failures:
            ledger.request_failed(kind, ref, "HTTP 500")
        ledger.flush()
        other.flush()
        held = ledger.held()

        db = open_db(path)

        def column(query: str) -> set[str]:
            found = db.execute(query, (sync,) * query.count("?")).fetchall()
            return {value for (value,) in found if value is not None}

        hashes = column("SELECT hash FROM contacts WHERE sync = ?")
        identities = column("SELECT identity FROM contacts WHERE sync = ?")
        keys = column(
            "SELECT key FROM events WHERE sync = ? UNION SELECT key_email FROM events "
            "WHERE sync = ? UNION SELECT key_user FROM events WHERE sync = ?"
        )
        failed = column("SELECT ref FROM failures WHERE sync = ?")
        props = set(
            db.execute(
                "SELECT identity, props FROM contacts WHERE sync = ? AND props IS NOT NULL",
                (sync,),
            ).fetchall()
        )
        db.close()
        values = pl.Series(asked, dtype=pl.String)
        assert held.holds_payloads(values).to_list() == [v in hashes for v in asked]
        assert held.knows_contacts(values).to_list() == [v in identities for v in asked]
        assert held.failed(values).to_list() == [v in failed for v in asked]
        occurrences = pl.DataFrame({"key_email": values, "key_user": values, "legacy": values})
        assert held.holds_event(occurrences).to_list() == [v in keys for v in asked]
        assert held.legacy == any(key.startswith("ls1-") for key in keys)
        assert set(held.props_of(values).iter_rows()) == {p for p in props if p[0] in asked}
        ledger.close()
        other.close()


def test_held_still_answers_about_contacts_once_the_ledger_is_closed(place: Place) -> None:
    """`plan` closes the ledger before planning: the few contacts a plan asks about are looked
    up on a connection of their own."""
    ledger = Ledger(place, "t")
    ledger.contact_delivered("e:a@x.io", "c1:aaa", ["plan", "email"])
    ledger.flush()
    held = ledger.held()
    ledger.close()
    asked = pl.Series(["e:a@x.io", "e:b@x.io", None])
    assert held.knows_contacts(asked).to_list() == [True, False, False]
    assert held.props_of(asked).rows() == [("e:a@x.io", ",email,plan,")]
