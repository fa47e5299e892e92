"""An event reaches Loops once per occurrence, whatever changes around it, and after its upsert.

An occurrence is (sync, event, the contact, the once_per values), and the contact is matched as
Loops matches it: by email or by userId. These run the real CLI twice against one emulator,
changing the source or the config in between, and count what Loops received.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

import polars as pl

from sync.keys import legacy_event_key
from sync.ledger_schema import MIGRATIONS
from tests.e2e.conftest import Project

BY_EMAIL_AND_ID = """
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: 200
      max_attempts: 2  # a failing request is given up within a second
    contact:
      email: email
      user_id: id
      properties:
        plan: plan
    events:
      - name: signup
        email: email
        user_id: id
"""


def old_ledger(project: Project, events: list[tuple[str, str, str, list[str]]]) -> None:
    """A schema-1 ledger, as loops-sync wrote it before ls2: (sync, event, identity, once_per
    values) delivered under their ls1 keys."""
    project.state.mkdir()
    ledger = sqlite3.connect(project.state / "ledger.sqlite")
    ledger.executescript(MIGRATIONS[0])
    ledger.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    ledger.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    for sync, event, identity, once_per in events:
        key = legacy_event_key(sync, event, identity, once_per)
        ledger.execute("INSERT INTO events VALUES (?, ?, ?, ?, 0)", (sync, key, identity, event))
    ledger.commit()
    ledger.close()


def signups(project: Project) -> Counter[str]:
    return Counter(str(e.get("email")) for e in project.emulator.events())


def test_a_contact_that_gains_a_user_id_does_not_get_its_events_again(project: Project) -> None:
    project.write(BY_EMAIL_AND_ID, "email,id,plan\nann@x.com,,free\nbob@x.com,7,free\n")
    assert project.sync().returncode == 0
    project.write(BY_EMAIL_AND_ID, "email,id,plan\nann@x.com,42,free\nbob@x.com,7,free\n")
    second = project.sync()
    assert second.returncode == 0, second.stderr
    assert signups(project) == {"ann@x.com": 1, "bob@x.com": 1}
    ann = next(c for c in project.emulator.contacts() if c["email"] == "ann@x.com")
    assert ann["userId"] == "42"  # the contact itself is updated: it changed


def test_a_contact_whose_email_changes_keeps_its_events(project: Project) -> None:
    project.write(BY_EMAIL_AND_ID, "email,id,plan\nann@x.com,42,free\n")
    assert project.sync().returncode == 0
    project.write(BY_EMAIL_AND_ID, "email,id,plan\nann@new.com,42,free\n")
    assert project.sync().returncode == 0
    assert len(project.emulator.events()) == 1


def test_a_config_that_gains_an_identifier_sends_nothing_again(project: Project) -> None:
    events_by_email = BY_EMAIL_AND_ID.replace("        user_id: id\n", "", 1)
    events_by_email = events_by_email.replace("      user_id: id\n", "", 1)
    csv = "email,id,plan\nann@x.com,1,free\nbob@x.com,2,free\n"
    project.write(events_by_email, csv)
    assert project.sync().returncode == 0
    project.write(BY_EMAIL_AND_ID, csv)
    second = project.sync("--report", "second.json")
    assert second.returncode == 0, second.stderr
    assert signups(project) == {"ann@x.com": 1, "bob@x.com": 1}


def test_an_event_by_user_id_that_gains_the_email_is_not_sent_again(project: Project) -> None:
    by_id = BY_EMAIL_AND_ID.replace(
        "        email: email\n        user_id: id\n", "        user_id: id\n"
    )
    csv = "email,id,plan\nann@x.com,1,free\nbob@x.com,2,free\n"
    project.write(by_id, csv)
    assert project.sync().returncode == 0
    assert len(project.emulator.events()) == 2
    project.write(BY_EMAIL_AND_ID, csv)
    assert project.sync().returncode == 0
    assert len(project.emulator.events()) == 2


def test_a_ledger_written_before_ls2_keys_keeps_every_event(project: Project) -> None:
    """Schema 1 remembered events by ls1 keys; migrated in place, they are still delivered."""
    old_ledger(
        project,
        [
            ("people", "signup", "u:1", []),
            ("people", "signup", "e:bob@x.com", []),
            ("people", "order", "e:ann@x.com", ["1001"]),
        ],
    )
    config = (
        BY_EMAIL_AND_ID + "      - name: order\n        email: email\n        once_per: [order]\n"
    )
    project.write(config, "email,id,plan,order\nann@x.com,1,free,1001\nbob@x.com,,free,1002\n")

    result = project.sync()

    assert result.returncode == 0, result.stderr
    sent = Counter((e["eventName"], e.get("email")) for e in project.emulator.events())
    assert sent == {("order", "bob@x.com"): 1}  # the only occurrence the old ledger lacked


def test_an_upsert_goes_before_an_event_that_names_the_contact_by_another_column(
    project: Project,
) -> None:
    """The README's own shape: the contact by email and user id, its event by email only."""
    config = BY_EMAIL_AND_ID.replace("        user_id: id\n", "", 1)
    project.write(config, "email,id,plan\nann@x.com,42,free\nbob@x.com,43,free\n")
    assert project.sync().returncode == 0
    first_for: dict[str, str] = {}
    for request in project.api_requests():
        email = str(request["body"]["email"])
        first_for.setdefault(email, request["path"])
    assert first_for == {"ann@x.com": "/v1/contacts/update", "bob@x.com": "/v1/contacts/update"}


def test_an_event_waits_when_its_upsert_fails_even_when_named_by_another_column(
    project: Project,
) -> None:
    config = BY_EMAIL_AND_ID.replace("        user_id: id\n", "", 1)
    project.write(config, "email,id,plan\nann@x.com,42,doomed-plan\nbob@x.com,43,free\n")
    project.emulator.set_faults(fail_match="doomed-plan")

    result = project.sync("--report", "run.json")

    assert result.returncode == 5  # work left: ann's upsert and event, next run
    assert signups(project) == {"bob@x.com": 1}  # ann's event waits for her upsert


ORDERS = """
    name: shop
    source:
      csv: people.csv
    loops:
      rate_limit: 200
    events:
      - name: order
        email: email
        once_per: {once_per}
"""


def test_a_once_per_column_added_sends_nothing_again_and_later_values_are_new(
    project: Project,
) -> None:
    project.write(ORDERS.format(once_per="[]"), "email,campaign\nann@x.com,c1\nbob@x.com,c1\n")
    assert project.sync().returncode == 0
    project.write(ORDERS.format(once_per="[campaign]"))
    second = project.sync()
    assert second.returncode == 0, second.stderr
    assert len(project.emulator.events()) == 2  # the delivered ones stand for campaign c1

    project.write(ORDERS.format(once_per="[campaign]"), "email,campaign\nann@x.com,c2\n")
    assert project.sync().returncode == 0
    sent = [(e["email"], e["eventName"]) for e in project.emulator.events()]
    assert sent.count(("ann@x.com", "order")) == 2  # c2 is a new occurrence


SHOP = """
    name: shop
    source:
      csv: people.csv
    loops:
      rate_limit: 200
    contact:
      email: email
      properties:
        plan: plan
    events:
      - name: order
        email: email
        once_per: [order_id]
"""


def test_new_orders_of_an_unchanged_contact_after_a_changed_one_are_each_sent(
    project: Project,
) -> None:
    """The nightly case: ann changed plan and ordered (her upsert rides on the order); bob,
    unchanged, ordered twice: both of bob's orders reach Loops, each as itself. (The second
    job's first order was taken for an upsert to carry: never sent, yet recorded.)"""
    project.write(SHOP, "email,plan,order_id\nann@x.com,free,1\nbob@x.com,free,2\n")
    assert project.sync().returncode == 0
    project.write(
        SHOP, "email,plan,order_id\nann@x.com,pro,3\nbob@x.com,free,4\nbob@x.com,free,5\n"
    )
    result = project.sync()
    assert result.returncode == 0, result.stderr
    orders = sorted(str(e["email"]) for e in project.emulator.events())
    assert orders == ["ann@x.com"] * 2 + ["bob@x.com"] * 3
    assert contacts_plan(project) == {"ann@x.com": "pro", "bob@x.com": "free"}


def contacts_plan(project: Project) -> dict[str, object]:
    return {str(c["email"]): c.get("plan") for c in project.emulator.contacts()}


def test_a_once_per_column_removed_sends_nothing_again(project: Project) -> None:
    csv = "email,order_id,sku\nann@x.com,1,a\nann@x.com,2,b\nbob@x.com,3,c\n"
    project.write(ORDERS.format(once_per="[order_id, sku]"), csv)
    assert project.sync().returncode == 0
    assert len(project.emulator.events()) == 3
    project.write(ORDERS.format(once_per="[order_id]"))
    assert project.sync().returncode == 0
    project.write(ORDERS.format(once_per="[]"))
    assert project.sync().returncode == 0
    assert len(project.emulator.events()) == 3


def test_a_parquet_column_whose_type_drifts_to_float_sends_nothing_again(
    project: Project,
) -> None:
    """One null turns a Parquet integer column into Float64: the ids and once_per values
    read the same (101, not 101.0), so no key changes."""
    config = """
        name: shop
        source:
          parquet: orders.parquet
        loops:
          rate_limit: 200
        contact:
          email: email
          user_id: user_id
        events:
          - name: order
            email: email
            user_id: user_id
            once_per: [order_id]
    """
    project.write(config)
    emails, order_ids = ["ann@x.com", "bob@x.com"], [1, 2]
    pl.DataFrame({"email": emails, "user_id": [101, 102], "order_id": order_ids}).write_parquet(
        project.root / "orders.parquet"
    )
    assert project.sync().returncode == 0
    drifted = pl.DataFrame(
        {
            "email": [*emails, "eve@x.com"],
            "user_id": [101.0, 102.0, None],
            "order_id": [1.0, 2.0, None],
        }
    )
    drifted.write_parquet(project.root / "orders.parquet")

    result = project.sync()

    assert result.returncode == 0, result.stderr
    assert len(project.emulator.events()) == 2
    assert {c.get("userId") for c in project.emulator.contacts()} >= {"101", "102"}


def test_a_new_row_that_loops_would_merge_with_a_delivered_contact_is_rejected(
    project: Project,
) -> None:
    project.write(BY_EMAIL_AND_ID, "email,id,plan\nann@x.com,1,free\n")
    assert project.sync().returncode == 0
    project.write(BY_EMAIL_AND_ID, "email,id,plan\nann@x.com,1,free\nann@x.com,2,pro\n")

    plan = project.run("plan", str(project.config))
    second = project.sync()

    assert "rows 1, 2 with different user ids" in plan.stdout
    assert second.returncode == 1
    ann = next(c for c in project.emulator.contacts() if c["email"] == "ann@x.com")
    assert (ann["userId"], ann["plan"]) == ("1", "free")  # nothing rewrote her


def test_a_value_emptied_in_the_source_is_counted_as_kept_in_loops_under_empty_skip(
    project: Project,
) -> None:
    project.write(BY_EMAIL_AND_ID, "email,id,plan\nann@x.com,1,pro\nbob@x.com,2,free\n")
    assert project.sync().returncode == 0
    project.write(BY_EMAIL_AND_ID, "email,id,plan\nann@x.com,1,\nbob@x.com,2,free\n")

    plan = project.run("plan", str(project.config))
    second = project.sync("--report", "second.json")

    assert "Loops keeps the old value: plan (1) contacts" in plan.stdout
    assert "empty: clear" in plan.stdout
    report = json.loads((project.root / "second.json").read_text())
    assert report["kept_in_loops"] == {"plan": 1}
    assert second.returncode == 0
    ann = next(c for c in project.emulator.contacts() if c["email"] == "ann@x.com")
    assert ann["plan"] == "pro"


def test_events_an_older_ledger_keyed_by_a_float_form_are_not_sent_again(
    project: Project,
) -> None:
    """Before one text form, a Float64 once_per value went into the ls1 key as '1.0'."""
    old_ledger(
        project,
        [("shop", "order", "e:ann@x.com", ["1.0"]), ("shop", "order", "e:bob@x.com", ["2.0"])],
    )
    frame = {"email": ["ann@x.com", "bob@x.com"], "order_id": [1.0, 2.0]}
    pl.DataFrame(frame).write_parquet(project.root / "orders.parquet")
    project.write(
        ORDERS.format(once_per="[order_id]").replace("csv: people.csv", "parquet: orders.parquet")
    )

    result = project.sync()

    assert result.returncode == 0, result.stderr
    assert project.emulator.events() == []


def test_a_contact_that_gains_a_user_id_then_changes_email_keeps_its_events(
    project: Project,
) -> None:
    """Found by email the night it gains a user id, the ledger learns the user id: the night
    its email changes, the event is still found."""
    project.write(BY_EMAIL_AND_ID, "email,id,plan\nann@x.com,,free\n")
    assert project.sync().returncode == 0
    project.write(BY_EMAIL_AND_ID, "email,id,plan\nann@x.com,42,free\n")
    assert project.sync().returncode == 0
    project.write(BY_EMAIL_AND_ID, "email,id,plan\nann@new.com,42,free\n")
    assert project.sync().returncode == 0
    assert len(project.emulator.events()) == 1


def test_a_once_per_column_with_a_non_ascii_name_added_later_values_are_sent(
    project: Project,
) -> None:
    project.write(ORDERS.format(once_per="[]"), "email,número\nann@x.com,c1\n")
    assert project.sync().returncode == 0
    project.write(ORDERS.format(once_per="[número]"))
    assert project.sync().returncode == 0
    assert len(project.emulator.events()) == 1
    project.write(ORDERS.format(once_per="[número]"), "email,número\nann@x.com,c2\n")
    assert project.sync().returncode == 0
    assert len(project.emulator.events()) == 2  # c2 is a new occurrence


def test_an_older_ledger_with_a_user_id_written_from_a_float_keeps_its_event(
    project: Project,
) -> None:
    old_ledger(project, [("people", "signup", "u:101.0", [])])
    by_id = BY_EMAIL_AND_ID.replace(
        "        email: email\n        user_id: id\n", "        user_id: id\n"
    )
    project.write(by_id, "email,id,plan\nann@x.com,101,free\n")
    assert project.sync().returncode == 0
    assert project.emulator.events() == []


def test_an_event_waits_when_its_contacts_last_row_is_rejected(project: Project) -> None:
    config = """
        name: people
        source:
          csv: people.csv
        loops:
          rate_limit: 200
        contact:
          email: email
          properties:
            seats: {column: seats, type: number}
        events:
          - name: signup
            email: email
            when: "plan = 'pro'"
    """
    project.write(config, "email,seats,plan\nann@x.com,3,pro\nann@x.com,n/a,free\n")
    assert project.sync().returncode == 1
    assert project.api_requests("/events/send") == []
    assert project.api_requests("/contacts/update") == []
