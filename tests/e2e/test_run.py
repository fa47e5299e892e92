"""The real CLI against the emulator: what ends up in Loops, not only exit codes."""

from __future__ import annotations

import csv
import json
import shutil

from tests.e2e.conftest import REPO, Project

CONFIG = """
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: 200
    contact:
      email: Email
      properties:
        firstName: First Name
        seats: {column: Seats, type: number}
        signedUpAt: {column: Signed Up, type: date}
      mailing_lists:
        cm06f5v0e45nf0ml5754o9cix: Newsletter
    events:
      - name: signup
        email: Email
        properties:
          plan: Plan
"""
CSV = """
    Email,First Name,Seats,Signed Up,Newsletter,Plan
    ada@example.com,Ada,3,2026-01-05,yes,pro
    grace@example.com,Grace,,2026-02-01T10:00:00Z,,free
    LINUS@Example.com ,Linus,12,1767225600,no,team
"""


def test_a_run_puts_contacts_and_events_into_loops(project: Project) -> None:
    project.write(CONFIG, CSV)
    result = project.sync()
    assert result.returncode == 0, result.stderr

    contacts = {c["email"]: c for c in project.emulator.contacts()}
    assert set(contacts) == {"ada@example.com", "grace@example.com", "linus@example.com"}
    assert contacts["ada@example.com"]["firstName"] == "Ada"
    assert contacts["ada@example.com"]["seats"] == 3
    assert contacts["ada@example.com"]["signedUpAt"] == 1767571200000
    assert contacts["ada@example.com"]["mailingLists"] == {"cm06f5v0e45nf0ml5754o9cix": True}
    assert not contacts["linus@example.com"]["mailingLists"].get("cm06f5v0e45nf0ml5754o9cix")
    linus = [r["body"] for r in project.api_requests() if "linus" in r["body"]["email"]]
    assert linus[0]["mailingLists"] == {"cm06f5v0e45nf0ml5754o9cix": False}
    assert "seats" not in contacts["grace@example.com"]  # an empty cell is not sent

    events = project.emulator.events()
    assert sorted(e["email"] for e in events) == sorted(contacts)
    assert {e["eventProperties"]["plan"] for e in events} == {"pro", "free", "team"}

    for request in project.api_requests():
        body = request["body"]
        assert "subscribed" not in body
        assert None not in body.values()
        if request["path"].endswith("/events/send"):
            assert request["idempotency_key"].startswith("ls2-")


def test_a_contacts_properties_reach_loops_before_its_events(project: Project) -> None:
    """The first request for each person carries its properties: an upsert, or an event that
    carries them (one request instead of two); a second event comes after."""
    second_event = "      - name: welcome\n        email: Email\n"
    project.write(CONFIG + second_event, CSV)
    assert project.sync().returncode == 0
    first_seen: dict[str, dict[str, object]] = {}
    order: dict[str, list[str]] = {}
    for request in project.api_requests():
        email = str(request["body"]["email"])
        first_seen.setdefault(email, request["body"])
        order.setdefault(email, []).append(str(request["body"].get("eventName", "upsert")))
    assert all("firstName" in body for body in first_seen.values())
    assert all(names == ["signup", "welcome"] for names in order.values())
    assert len(project.emulator.events()) == 6


def test_a_second_run_sends_nothing_and_five_changes_send_five(project: Project) -> None:
    rows = ["Email,First Name,Seats,Signed Up,Newsletter,Plan"] + [
        f"p{i}@example.com,P{i},{i},2026-01-01,yes,free" for i in range(30)
    ]
    project.write(CONFIG, "\n".join(rows) + "\n")
    assert project.sync().returncode == 0
    sent_first = len(project.api_requests())
    assert sent_first == 30  # each upsert rides on its contact's signup event

    second = project.sync("--report", "second.json")
    assert second.returncode == 0
    assert len(project.api_requests()) == sent_first
    report = json.loads((project.root / "second.json").read_text())
    assert report["requests"] == 0
    assert report["skipped_unchanged"] == 30

    for i in (1, 7, 12, 20, 29):
        rows[i + 1] = rows[i + 1].replace(f",P{i},", f",Changed{i},")
    (project.root / "people.csv").write_text("\n".join(rows) + "\n")
    assert project.sync().returncode == 0
    new_requests = project.api_requests()[sent_first:]
    assert [r["path"] for r in new_requests] == ["/v1/contacts/update"] * 5
    assert sorted(r["body"]["firstName"] for r in new_requests) == sorted(
        f"Changed{i}" for i in (1, 7, 12, 20, 29)
    )


def test_a_messy_clay_export_ends_with_good_rows_in_loops_and_bad_rows_in_rejects(
    project: Project,
) -> None:
    shutil.copy(REPO / "sample_data" / "clay_export.csv", project.root / "clay_export.csv")
    config = (REPO / "configs" / "clay.yaml").read_text()
    config = config.replace("../sample_data/clay_export.csv", "clay_export.csv")
    project.write(config.replace("rate_limit: 10", "rate_limit: 200"))

    result = project.sync("--report", "report.json")
    assert result.returncode == 1, result.stderr
    report = json.loads((project.root / "report.json").read_text())

    with (project.root / "clay_export.csv").open(encoding="utf-8-sig", newline="") as source:
        source_rows = list(csv.DictReader(source))
    rejects_path = project.state / "clay-leads-rejects.csv"
    with rejects_path.open(newline="", encoding="utf-8-sig") as rejects_file:
        rejects = list(csv.DictReader(rejects_file))
    rejected_rows = {int(r["row"]) for r in rejects}
    assert len(rejects) == report["rows_rejected"] == 6
    assert all(r["reason"] for r in rejects)
    assert {"First Name", "Email", "Company Name"} <= set(rejects[0])  # the original columns

    good_emails = {
        row["Email"].strip().lower()
        for number, row in enumerate(source_rows, start=1)
        if number not in rejected_rows
    }
    in_loops = {c["email"] for c in project.emulator.contacts()}
    assert in_loops == good_emails
    assert report["duplicates"] == 1


def test_dry_run_writes_the_payloads_and_sends_nothing(project: Project) -> None:
    project.write(CONFIG, CSV)
    result = project.sync("--dry-run")
    assert result.returncode == 0, result.stderr
    assert project.emulator.counters()["requests"] == 0
    lines = (project.state / "people-dry-run.ndjson").read_text().splitlines()
    payloads = [json.loads(line) for line in lines]
    assert [p["path"] for p in payloads] == ["/v1/events/send"] * 3  # upserts ride on events
    assert all(p["idempotency_key"].startswith("ls2-") for p in payloads)
    assert {p["body"]["firstName"] for p in payloads} == {"Ada", "Grace", "Linus"}


def test_a_wrong_api_key_stops_the_run_with_exit_3_and_hides_the_key(project: Project) -> None:
    project.write(CONFIG, CSV)
    result = project.sync(LOOPS_API_KEY="sk-wrong-secret")
    assert result.returncode == 3
    assert "API key" in result.stderr
    assert "sk-wrong-secret" not in result.stdout + result.stderr
    assert project.emulator.counters()["401"] >= 1
    assert not project.emulator.contacts()


def test_a_missing_api_key_is_a_usage_error_naming_the_variable(project: Project) -> None:
    project.write(CONFIG, CSV)
    result = project.sync(LOOPS_API_KEY="")
    assert result.returncode == 2
    assert "LOOPS_API_KEY" in result.stderr
    assert project.emulator.counters()["requests"] == 0


def test_a_config_mistake_is_one_clear_screen_with_exit_2(project: Project) -> None:
    mistaken = CONFIG.replace("First Name", "First name")
    project.write(mistaken, CSV)
    result = project.sync()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "First name" in result.stderr
    assert "did you mean 'First Name'" in result.stderr


def test_a_reserved_property_name_is_refused_before_anything_is_sent(project: Project) -> None:
    project.write(CONFIG.replace("plan: Plan", "id: Plan"), CSV)
    result = project.sync()
    assert result.returncode == 2
    assert "reserved" in result.stderr
    assert project.emulator.counters()["requests"] == 0


def test_a_row_loops_refuses_goes_to_the_rejects_file_with_loops_message(
    project: Project,
) -> None:
    """The emulator knows no list 'cl_unknown': Loops' 400 rejects that row, the rest land."""
    config = CONFIG.replace(
        "cm06f5v0e45nf0ml5754o9cix: Newsletter",
        "cm06f5v0e45nf0ml5754o9cix: Newsletter\n        cl_unknown: Beta",
    )
    csv_text = "Email,First Name,Seats,Signed Up,Newsletter,Plan,Beta\n"
    csv_text += "ada@example.com,Ada,3,2026-01-05,yes,pro,\n"
    csv_text += "grace@example.com,Grace,1,2026-01-05,no,free,yes\n"
    project.write(config, csv_text)
    result = project.sync("--no-check")  # past the account check, which would refuse the list
    assert result.returncode == 1
    with (project.state / "people-rejects.csv").open(
        newline="", encoding="utf-8-sig"
    ) as rejects_file:
        rejects = list(csv.DictReader(rejects_file))
    assert [(r["row"], r["Email"]) for r in rejects] == [("2", "grace@example.com")]
    assert "cl_unknown" in rejects[0]["reason"]
    assert "Loops answered 400" in rejects[0]["reason"]
    assert [c["email"] for c in project.emulator.contacts()] == ["ada@example.com"]
    second = project.sync("--no-check")  # not marked delivered: tried again, refused again
    assert second.returncode == 1
