"""The ledger keeps only what Loops confirmed, survives reopening, and locks one run at a time."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import mapping
from sync.config import SyncConfig
from sync.errors import LockedError, SourceError
from sync.ledger import SCHEMA_VERSION, Ledger, Snapshot, hold_lock
from sync.mapping import ROW, Mapped, map_rows
from sync.plan import make_plan

SPEC = SyncConfig.model_validate(
    {
        "name": "t",
        "source": {"csv": "x.csv"},
        "contact": {"email": "email", "properties": {"plan": "plan"}},
        "events": [{"name": "signup", "email": "email"}],
    }
)


def mapped(rows: list[tuple[str, str]], confirmed: Snapshot | None = None) -> Mapped:
    frame = pl.DataFrame(rows, schema=["email", "plan"], orient="row").with_row_index(ROW, offset=1)
    return map_rows(SPEC, frame, confirmed=confirmed)


def deliver_all(ledger: Ledger, plan_frame: pl.DataFrame) -> None:
    columns = plan_frame.select("kind", "identity", "ref", "event")
    for kind, identity, ref, event in columns.iter_rows():
        if kind == "contact":
            ledger.contact_delivered(identity, ref)
        else:
            ledger.event_delivered(ref, identity, event)
    ledger.flush()


def test_plan_sends_only_new_changed_and_failed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "t")
    first = make_plan(mapped([("a@x.io", "free"), ("b@x.io", "free")]), ledger.snapshot())
    assert first.counts["contacts_new"] == 2
    assert first.counts["events_new"] == 2
    deliver_all(ledger, first.requests)

    rows = [("a@x.io", "free"), ("b@x.io", "pro"), ("c@x.io", "free")]
    second = make_plan(mapped(rows), ledger.snapshot())
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


def test_a_failed_contact_is_retried_and_then_forgotten(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "t")
    ledger.request_failed("contact", "e:a@x.io", "HTTP 500")
    ledger.flush()
    plan = make_plan(mapped([("a@x.io", "free")]), ledger.snapshot())
    assert plan.counts["contacts_retry"] == 1
    deliver_all(ledger, plan.requests)
    assert ledger.failures().is_empty()


def test_full_resends_contacts_but_never_events(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "t")
    deliver_all(ledger, make_plan(mapped([("a@x.io", "free")]), ledger.snapshot()).requests)
    again = make_plan(mapped([("a@x.io", "free")]), ledger.snapshot(), full=True)
    assert again.requests.get_column("kind").to_list() == ["contact"]
    assert again.counts["contacts_changed"] == 1


def test_writes_are_batched_and_unflushed_ones_are_lost_harmlessly(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path, "t")
    ledger.contact_delivered("e:a@x.io", "c1:aaa")
    other = Ledger(path, "t")
    assert other.delivered_contacts().is_empty()  # not committed yet: a crash would re-send it
    ledger.flush()
    assert other.delivered_contacts().rows() == [("e:a@x.io", "c1:aaa", None)]


def test_syncs_sharing_a_ledger_file_do_not_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    one = Ledger(path, "one")
    one.event_delivered("ls2-x", "e:a@x.io", "signup")
    one.flush()
    assert Ledger(path, "two").delivered_events().is_empty()
    assert Ledger(path, "one").delivered_events().rows() == [("ls2-x",)]


def test_schema_version_is_recorded_and_a_newer_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path, "t").close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(SCHEMA_VERSION),
    )
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(SourceError, match="newer loops-sync"):
        Ledger(path, "t")


def test_runs_are_recorded_for_history(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", "t")
    run_id = ledger.start_run("cfg")
    ledger.finish_run(run_id, 1, {"contacts_sent": 3})
    [run] = ledger.runs()
    assert run.exit_code == 1
    assert run.counts == {"contacts_sent": 3}
    assert run.ended_at is not None


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    with (
        hold_lock(tmp_path, "t"),
        pytest.raises(LockedError, match=r"pid \d+") as caught,
        hold_lock(tmp_path, "t"),
    ):
        pass
    assert caught.value.exit_code == 4
    with hold_lock(tmp_path, "t"):  # released: the next run goes ahead
        pass


def test_a_dead_holders_lock_does_not_block(tmp_path: Path) -> None:
    code = (
        "import os, sys; from pathlib import Path; from sync.ledger import hold_lock\n"
        f"with hold_lock(Path({str(tmp_path)!r}), 't'): os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 9
    with hold_lock(tmp_path, "t"):
        pass


def test_rows_loops_already_holds_are_counted_not_kept(tmp_path: Path) -> None:
    """Only what will be sent keeps a body: a big unchanged table costs a count, not bodies."""
    ledger = Ledger(tmp_path / "ledger.sqlite", "t")
    rows = [("a@x.io", "free"), ("b@x.io", "free"), ("d@x.io", "free")]
    deliver_all(ledger, make_plan(mapped(rows), ledger.snapshot()).requests)
    ledger.request_failed("contact", "e:b@x.io", "HTTP 500")
    ledger.flush()
    rows = [("a@x.io", "free"), ("b@x.io", "free"), ("c@x.io", "pro"), ("d@x.io", "pro")]
    again = mapped(rows, ledger.snapshot())
    kept = dict(again.contacts.select("identity", pl.col("body").is_not_null()).iter_rows())
    assert kept == {"e:b@x.io": True, "e:c@x.io": True, "e:d@x.io": True}  # b failed: retried
    events = dict(again.events.select("identity", pl.col("body").is_not_null()).iter_rows())
    assert events == {"e:b@x.io": False, "e:c@x.io": True, "e:d@x.io": False}
    assert (again.contacts_settled, again.events_settled) == (1, 1)  # a, whole
    plan = make_plan(again, ledger.snapshot())
    assert sorted(plan.requests.get_column("identity").to_list()) == [
        "e:b@x.io",
        "e:c@x.io",
        "e:c@x.io",
        "e:d@x.io",
    ]
    # The same counts as a plan made without setting anything aside.
    assert plan.counts == make_plan(mapped(rows), ledger.snapshot()).counts


def test_a_settled_last_row_wins_over_an_earlier_changed_one(tmp_path: Path) -> None:
    """The last row of an identity wins even when Loops already holds it: nothing is sent."""
    ledger = Ledger(tmp_path / "ledger.sqlite", "t")
    deliver_all(ledger, make_plan(mapped([("a@x.io", "free")]), ledger.snapshot()).requests)
    rows = [("a@x.io", "pro"), ("b@x.io", "free"), ("a@x.io", "free")]
    again = mapped(rows, ledger.snapshot())
    plan = make_plan(again, ledger.snapshot())
    assert plan.requests.get_column("identity").unique().to_list() == ["e:b@x.io"]
    assert again.duplicates == 1
    assert plan.counts == make_plan(mapped(rows), ledger.snapshot()).counts


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
@settings(max_examples=40, deadline=None)
@given(before=ROWS, now=ROWS, failed=st.sets(st.sampled_from(["e:a@x.io", "e:b@x.io"])))
def test_setting_rows_aside_while_mapping_changes_no_plan(
    spec: SyncConfig, before: list[tuple[str, str]], now: list[tuple[str, str]], failed: set[str]
) -> None:
    """Mapping with the ledger's snapshot (rows Loops holds set aside, slices of 3 rows, built a
    slice ahead) plans the same requests and counts as mapping without it."""

    def mapped_as(rows: list[tuple[str, str]], confirmed: Snapshot | None = None) -> Mapped:
        frame = pl.DataFrame(rows, schema=["email", "plan"], orient="row")
        return map_rows(spec, frame.with_row_index(ROW, offset=1), confirmed=confirmed)

    with tempfile.TemporaryDirectory() as work, pytest.MonkeyPatch.context() as patch:
        patch.setattr(mapping, "SLICE_ROWS", 3)
        ledger = Ledger(Path(work) / "ledger.sqlite", "t")
        deliver_all(ledger, make_plan(mapped_as(before), ledger.snapshot()).requests)
        for identity in failed:
            ledger.request_failed("contact", identity, "HTTP 500")
        ledger.flush()
        snapshot = ledger.snapshot()
        for full in (False, True):
            skip = snapshot.without_contacts() if full else snapshot
            aside, whole = mapped_as(now, skip), mapped_as(now)
            planned, reference = (make_plan(m, snapshot, full=full) for m in (aside, whole))
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
    with pytest.raises(SourceError, match="state directory"), hold_lock(blocker, "t"):
        pass


def test_a_delivered_event_is_committed_at_once(tmp_path: Path) -> None:
    """A SIGKILL must not lose it: re-sent a day later, Loops would no longer answer 409."""
    path = tmp_path / "ledger.sqlite"
    Ledger(path, "t").event_delivered("ls2-x", "e:a@x.io", "signup")  # never flushed or closed
    assert Ledger(path, "t").delivered_events().rows() == [("ls2-x",)]
