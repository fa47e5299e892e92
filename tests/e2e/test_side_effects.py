"""Side effects shown before they happen: the counts the plan and the report give are what the
run then sends (contacts created, `subscribed` true and false, properties cleared)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from tests.e2e.conftest import Project

CONFIG = """
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: 200
    contact:
      email: Email
      empty: clear
      properties:
        firstName: First Name
        company: Company
        subscribed: {column: Subscribed, type: boolean}
"""
CSV = """
    Email,First Name,Company,Subscribed
    ada@example.com,Ada,Acme,true
    grace@example.com,,Globex,false
    linus@example.com,Linus,,
    mary@example.com,,,yes
"""


def sent_effects(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """What the bodies Loops received did besides storing values."""
    bodies = [r["body"] for r in requests]
    cleared = Counter(name for body in bodies for name, value in body.items() if value is None)
    return {
        "subscribed_true": sum(body.get("subscribed") is True for body in bodies),
        "subscribed_false": sum(body.get("subscribed") is False for body in bodies),
        "properties_cleared": dict(cleared),
    }


def test_the_side_effects_shown_are_what_the_run_sends(project: Project) -> None:
    project.write(CONFIG, CSV)
    plan = project.run("plan", str(project.config))
    assert "4 contacts created (e.g. ada@example.com, grace@example.com, linus@example.com)" in (
        plan.stdout
    )
    assert '"Contact added" workflows' in plan.stdout
    assert "2 contacts sent subscribed: true" in plan.stdout
    assert "1 contacts sent subscribed: false (e.g. grace@example.com)" in plan.stdout
    assert "2 contacts have company cleared" in plan.stdout

    result = project.sync("--report", "first.json")
    assert result.returncode == 0, result.stderr
    effects = json.loads((project.root / "first.json").read_text())["side_effects"]
    assert effects["contacts_created"] == len(project.emulator.contacts()) == 4
    assert effects | sent_effects(project.api_requests()) == effects
    assert effects["properties_cleared"] == {"company": 2, "firstName": 2}
    assert effects["examples"]["subscribed_false"] == ["grace@example.com"]

    sent_before = len(project.api_requests())
    (project.root / "people.csv").write_text(
        CSV.replace("grace@example.com,,Globex", "grace@example.com,Grace,Initech")
        .replace("    ", "")
        .lstrip()
        + "zoe@example.com,Zoe,Umbrella,\n"
    )
    result = project.sync("--report", "second.json")
    assert result.returncode == 0, result.stderr
    effects = json.loads((project.root / "second.json").read_text())["side_effects"]
    assert effects["contacts_created"] == 1  # zoe; grace is updated
    assert len(project.emulator.contacts()) == 5
    assert effects | sent_effects(project.api_requests()[sent_before:]) == effects
    assert effects["subscribed_false"] == 1


def test_a_sync_that_only_stores_values_says_so(project: Project) -> None:
    project.write(
        CONFIG.replace("empty: clear", "empty: skip").replace(
            "        subscribed: {column: Subscribed, type: boolean}\n", ""
        ),
        CSV,
    )
    assert project.sync().returncode == 0
    plan = project.run("plan", str(project.config))
    assert "side effects in Loops: none (only values stored)" in plan.stdout
