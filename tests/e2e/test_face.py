"""What a run shows a person and a cron job: one vocabulary in the summary, the JSON report and
`history`; exit codes that tell bad data (1) from work left (5); a plan that groups rejects."""

from __future__ import annotations

import csv
import json
import re

from tests.e2e.conftest import Project

CONFIG = """
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: 200
      max_attempts: 2
    contact:
      email: email
      properties:
        plan: plan
        seats: {column: seats, type: number}
    events:
      - name: signup
        email: email
"""


def people(count: int, bad_seats: tuple[int, ...] = ()) -> str:
    rows = [f"p{i}@example.com,free,{'~50' if i in bad_seats else i}\n" for i in range(count)]
    return "email,plan,seats\n" + "".join(rows)


def summary_figure(summary: str, label: str) -> str:
    found = re.search(rf"^{re.escape(label)}\s+(.+?)\s*$", summary, re.MULTILINE)
    assert found, f"{label!r} not in the summary:\n{summary}"
    return found.group(1)


def test_summary_json_and_history_count_the_same_things(project: Project) -> None:
    project.write(CONFIG, people(12, bad_seats=(4, 9)))
    project.emulator.set_faults(fail_match="p7@example.com")  # a 500 on p7's one request
    result = project.run("run", str(project.config), "--report", "run.json")
    assert result.returncode == 5, result.stderr  # work left: p7, next run
    report = json.loads((project.root / "run.json").read_text())
    summary = result.stdout

    assert report["requests_planned"] == 10  # 10 good rows, each upsert riding on its event
    assert report["requests"] == 9 + 2  # p7 tried twice (max_attempts)
    assert (report["failed"], report["rows_rejected"]) == (1, 2)
    for label, key in [
        ("rows read", "rows_read"),
        ("requests planned", "requests_planned"),
        ("contacts sent", "contacts_sent"),
        ("events sent", "events_sent"),
        ("requests failed (retried next run)", "failed"),
        ("requests left for the next run", "work_left"),
    ]:
        assert summary_figure(summary, label) == str(report[key]), label
    assert summary_figure(summary, "rows rejected (bad data)") == "2"
    assert summary_figure(summary, "requests made / retries / 429s") == "11 / 1 / 0"
    assert summary_figure(summary, "requests per second").startswith("- (too few requests")

    history = project.run("history", str(project.config)).stdout.splitlines()
    assert history[0].split()[:7] == [
        "started",
        "took",
        "requests",
        "unchanged",
        "rejected",
        "failed",
        "removed",
    ]
    figures = history[1].split()
    assert figures[4:10] == ["11", "0", "2", "1", "0", "5"]  # ... failed, removed, exit
    assert "1 requests failed and are retried" in history[1]
    assert report["exit_reason"] == "work left for the next run: 1 requests failed and are retried"
    assert report["rejects"] == [
        {
            "column": "seats",
            "reason": "'~50' is not a number",
            "count": 2,
            "first_rows": [5, 10],
            "other_values": 0,
        }
    ]
    assert report["config_path"] == str(project.config)
    assert report["version"]
    assert report["started_at"] <= report["ended_at"]


def test_max_rejects_lets_a_scheduled_job_exit_0_while_rejects_stay_reported(
    project: Project,
) -> None:
    project.write(CONFIG, people(20, bad_seats=(3,)))
    assert project.sync().returncode == 1  # bad data: fix it
    project.write(CONFIG, people(20, bad_seats=(3, 11)))
    assert project.sync("--max-rejects", "1").returncode == 1
    result = project.sync("--max-rejects", "10%", "--report", "run.json")
    assert result.returncode == 0
    report = json.loads((project.root / "run.json").read_text())
    assert (report["rows_rejected"], report["rejects_allowed"]) == (2, 2)
    assert report["exit_reason"] == "every other row delivered; 2 rejected, within --max-rejects"
    with (project.state / "people-rejects.csv").open(newline="", encoding="utf-8-sig") as rejects:
        assert [row["row"] for row in csv.DictReader(rejects)] == ["4", "12"]

    wrong = project.sync("--max-rejects", "ten")
    assert wrong.returncode == 2
    assert "--max-rejects" in wrong.stderr
    assert "'ten' is not a number" in wrong.stderr


def test_plan_groups_rejects_by_column_and_reason_writes_them_and_speaks_json(
    project: Project,
) -> None:
    rows = people(30, bad_seats=(2, 5, 8, 11, 14, 17, 20)).replace("p25@example.com", "p25")
    project.write(CONFIG, rows)
    plan = project.run("plan", str(project.config))
    assert plan.returncode == 0, plan.stderr
    assert "      7  seats: '~50' is not a number (rows 3, 6, 9, 12, 15, …)" in plan.stdout
    assert "      1  email: 'p25' is not a valid email address (rows 26)" in plan.stdout
    rejects_file = project.state / "people-rejects.csv"
    assert f"rejects: {rejects_file}" in plan.stdout
    with rejects_file.open(newline="", encoding="utf-8-sig") as rejects:
        assert len(list(csv.DictReader(rejects))) == 8
    assert "about 11 s at 200 requests/s" not in plan.stdout  # 22 requests: under a second
    assert "requests: 22, about < 1 s at 200 requests/s" in plan.stdout

    as_json = json.loads(project.run("plan", str(project.config), "--json").stdout)
    assert as_json["requests_planned"] == 22
    assert as_json["rows_rejected"] == 8
    assert as_json["rejects"][0] == {
        "column": "seats",
        "reason": "'~50' is not a number",
        "count": 7,
        "first_rows": [3, 6, 9, 12, 15],
        "other_values": 0,
    }
    assert len(as_json["samples"]) == 3
    assert project.api_requests() == []


def test_a_source_whose_every_row_is_rejected_shows_one_line_per_kind_of_reason(
    project: Project,
) -> None:
    """A column mapped wrongly rejects every row, each for its own value: one line, not one a
    row, in the plan and in the report."""
    project.write(CONFIG, "email,plan,seats\n" + "".join(f"p{i},free,{i}\n" for i in range(40)))
    plan = project.run("plan", str(project.config))
    rejected = [line for line in plan.stdout.splitlines() if "not a valid email" in line]
    assert rejected == [
        "        40  email: 'p0' is not a valid email address, and 39 other values like it "
        "(rows 1, 2, 3, 4, 5, …)"
    ]
    assert project.sync("--report", "run.json").returncode == 1
    report = json.loads((project.root / "run.json").read_text())
    assert [(g["count"], g["other_values"]) for g in report["rejects"]] == [(40, 39)]
