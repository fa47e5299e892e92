"""Rows that leave the source (`contact.removed`), and the brake that keeps a broken export from
removing an audience."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Project

CONFIG = """
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: 200
      max_attempts: 2  # a failing request is given up within a second
    contact:
      email: email
      removed: {removed}
      properties:
        plan: plan
      mailing_lists:
        cm06f5v0e45nf0ml5754o9cix: newsletter
"""


def people(indices: range | list[int]) -> str:
    return "email,plan,newsletter\n" + "".join(f"p{i}@example.com,free,yes\n" for i in indices)


def contacts(project: Project) -> dict[str, dict[str, object]]:
    return {str(c["email"]): c for c in project.emulator.contacts()}


def test_a_contact_that_leaves_is_unsubscribed_once_and_comes_back_unsubscribed(
    project: Project,
) -> None:
    project.write(CONFIG.format(removed="unsubscribe"), people(range(30)))
    assert project.sync().returncode == 0
    (project.root / "people.csv").write_text(people([i for i in range(30) if i != 7]))

    plan = project.run("plan", str(project.config))
    assert "1 contacts unsubscribed (e.g. p7@example.com)" in plan.stdout
    sent_before = len(project.api_requests())
    result = project.sync("--report", "run.json")
    assert result.returncode == 0, result.stderr
    removals = project.api_requests()[sent_before:]
    assert [r["body"] for r in removals] == [{"email": "p7@example.com", "subscribed": False}]
    report = json.loads((project.root / "run.json").read_text())
    assert report["contacts_removed"] == report["side_effects"]["contacts_removed"] == 1
    assert contacts(project)["p7@example.com"]["subscribed"] is False

    assert project.sync().returncode == 0  # removed once, not every night
    assert len(project.api_requests()) == sent_before + 1

    (project.root / "people.csv").write_text(people(range(30)))  # p7 is back
    assert project.sync().returncode == 0
    back = project.api_requests()[sent_before + 1 :]
    assert [r["body"]["email"] for r in back] == ["p7@example.com"]
    assert "subscribed" not in back[0]["body"]  # not re-subscribed: subscribed is not mapped
    assert contacts(project)["p7@example.com"]["subscribed"] is False


@pytest.mark.parametrize(
    ("removed", "body", "left_in_loops"),
    [
        (
            "remove_from_lists",
            {"email": "p3@example.com", "mailingLists": {"cm06f5v0e45nf0ml5754o9cix": False}},
            True,
        ),
        ("delete", {"email": "p3@example.com"}, False),
    ],
)
def test_removal_by_lists_or_deletion(
    project: Project, removed: str, body: dict[str, object], left_in_loops: bool
) -> None:
    project.write(CONFIG.format(removed=removed), people(range(20)))
    assert project.sync().returncode == 0
    (project.root / "people.csv").write_text(people([i for i in range(20) if i != 3]))
    assert project.sync("--dry-run").returncode == 0  # the dry run shows the request as sent
    lines = (project.state / "people-dry-run.ndjson").read_text().splitlines()
    path = "/v1/contacts/delete" if removed == "delete" else "/v1/contacts/update"
    assert [json.loads(line) for line in lines] == [
        {"method": "POST" if removed == "delete" else "PUT", "path": path, "body": body}
    ]
    assert project.sync().returncode == 0
    assert project.api_requests()[-1]["body"] == body
    assert ("p3@example.com" in contacts(project)) is left_in_loops
    if removed == "delete":
        (project.root / "people.csv").write_text(people(range(20)))
        plan = project.run("plan", str(project.config))
        assert "1 contacts created (e.g. p3@example.com)" in plan.stdout  # back: created again


def test_the_brake_holds_back_a_mass_departure_until_a_person_approves_it(
    project: Project,
) -> None:
    project.write(CONFIG.format(removed="unsubscribe"), people(range(40)))
    assert project.sync().returncode == 0
    sent = len(project.api_requests())
    (project.root / "people.csv").write_text(people(range(20, 41)))  # 20 gone, 1 new

    held = project.sync("--report", "held.json")
    assert held.returncode == 1
    report = json.loads((project.root / "held.json").read_text())
    assert "20 contacts left the source, more than the 10" in report["removals_held_back"]
    assert "--allow-removals 20" in report["exit_reason"]
    assert [r["body"]["email"] for r in project.api_requests()[sent:]] == ["p40@example.com"]

    assert project.sync("--allow-removals", "20").returncode == 0
    unsubscribed = [r["body"] for r in project.api_requests()[sent + 1 :]]
    assert len(unsubscribed) == 20
    assert all(body["subscribed"] is False for body in unsubscribed)

    header, approved, held_back, _first = project.run(
        "history", str(project.config)
    ).stdout.splitlines()
    column = slice(header.index("failed") + len("failed"), header.index("removed") + len("removed"))
    assert [approved[column].strip(), held_back[column].strip()] == ["20", "0"]
    assert "20 contacts left the source" in held_back


def test_an_empty_source_removes_nobody(project: Project) -> None:
    project.write(CONFIG.format(removed="delete"), people(range(5)))
    assert project.sync().returncode == 0
    sent = len(project.api_requests())
    (project.root / "people.csv").write_text("email,plan,newsletter\n")
    result = project.sync("--report", "empty.json", "--allow-removals", "5")
    assert result.returncode == 1
    assert (
        "the source read no rows"
        in json.loads((project.root / "empty.json").read_text())["exit_reason"]
    )
    assert len(project.api_requests()) == sent
    assert len(contacts(project)) == 5


def test_a_removal_that_fails_is_tried_again_next_run(project: Project) -> None:
    project.write(CONFIG.format(removed="delete"), people(range(12)))
    assert project.sync().returncode == 0
    (project.root / "people.csv").write_text(people(range(11)))
    project.emulator.set_faults(fail_match="p11@example.com")
    assert project.sync().returncode == 5  # work left
    assert "p11@example.com" in contacts(project)
    project.emulator.set_faults(fail_match=None)
    assert project.sync().returncode == 0
    assert "p11@example.com" not in contacts(project)
