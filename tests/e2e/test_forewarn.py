"""The warnings a plan gives come true against Loops (the emulator), and a run shows the same
in its summary and its JSON report."""

from __future__ import annotations

import json

from tests.e2e.conftest import Project

CONFIG = """
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: 200
    contact:
      email: email
      user_id: uid
"""


def test_a_contact_by_user_id_alone_that_loops_lacks_is_warned_of_then_refused(
    project: Project,
) -> None:
    project.write(CONFIG, "uid,email\n1,a@example.com\n2,\n")
    plan = project.run("plan", str(project.config))
    assert "warning: 1 contacts have a user id but no email" in plan.stdout
    assert "row 2, user id 2" in plan.stdout
    run = project.run("run", str(project.config), "--report", "report.json")
    assert run.returncode == 1  # as warned: Loops refused the upsert, the row is rejected
    report = json.loads((project.root / "report.json").read_text())
    assert report["rejected_by_loops"] == 1
    [warning] = [w for w in report["warnings"] if "no email" in w]
    assert warning.startswith("1 contacts have a user id but no email")
    assert f"warning: {warning}" in run.stdout
