"""A new ledger is never silent, and `run --baseline` adopts an audience Loops already has: the
real CLI against the emulator, with a SQLite state and with the real PostgreSQL server."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.ledger_db import PgState
from tests.e2e.conftest import Project
from tests.ledger_backends import drop_schema, new_pg_state, require_postgres

CONFIG = """
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: 200
    contact:
      email: email
      properties:
        firstName: name
    events:
      - name: signup
        email: email
"""
SECRET = "baseline-secret-pw"  # noqa: S105  # a test password, to be masked


def people(*names: str) -> str:
    return "email,name\n" + "".join(f"p{i}@example.com,{name}\n" for i, name in enumerate(names))


@pytest.fixture
def pg_state() -> Iterator[PgState]:
    """A schema of its own on the local server, reached with a password (the server trusts
    its users: any password passes, and none may be shown)."""
    require_postgres()
    made = new_pg_state("e2e_baseline")
    try:
        yield PgState.parse(made.url.replace("postgres@", f"postgres:{SECRET}@"))
    finally:
        drop_schema(made)


def delivered_once(project: Project, count: int) -> bool:
    keys = Counter(e["idempotencyKey"] for e in project.emulator.events())
    return len(keys) == count and set(keys.values()) == {1}


def test_a_first_run_says_so_on_stderr_before_sending_even_when_quiet(project: Project) -> None:
    project.write(CONFIG, people("Ada", "Grace", "Linus"))
    ledger = project.state / "ledger.sqlite"

    first = project.sync("--report", "report.json")

    assert first.returncode == 0, first.stderr
    said = (
        f"warning: first run of sync `people` in this state ({ledger}): 3 contacts and 3 events "
        "will be sent"
    )
    assert said in first.stderr
    report = json.loads((project.root / "report.json").read_text())
    assert report["warnings"][0].startswith("first run of sync `people`")
    second = project.sync()
    assert second.returncode == 0, second.stderr
    assert "first run" not in second.stderr


def test_a_lost_ledger_is_noticed_then_adopted_with_baseline_and_nothing_is_sent_twice(
    project: Project,
) -> None:
    project.write(CONFIG, people("Ada", "Grace", "Linus"))
    assert project.sync(LOOPS_SYNC_STATE=str(project.root / "lost")).returncode == 0
    sent_before = len(project.api_requests())

    plan = project.run("plan", str(project.config))
    assert "warning: first run of sync `people` in this state" in plan.stdout
    assert "3 contacts and 3 events will be sent" in plan.stdout

    baseline = project.run("run", str(project.config), "--baseline", LOOPS_API_KEY="")
    assert baseline.returncode == 0, baseline.stderr
    assert (
        "baseline: recorded 3 contacts and 3 events as delivered; nothing sent" in baseline.stdout
    )
    assert "first run" not in baseline.stdout + baseline.stderr
    history = project.run("history", str(project.config))
    assert "baseline: recorded 3 contacts and 3 events" in history.stdout

    unchanged = project.sync()
    assert unchanged.returncode == 0, unchanged.stderr
    assert "first run" not in unchanged.stderr
    assert len(project.api_requests()) == sent_before
    assert delivered_once(project, 3)

    (project.root / "people.csv").write_text(people("Ada", "Grace Hopper", "Linus"))
    assert project.sync().returncode == 0
    [change] = project.api_requests()[sent_before:]
    assert change["body"] == {"email": "p1@example.com", "firstName": "Grace Hopper"}
    assert delivered_once(project, 3)


def test_a_baseline_in_postgresql_adopts_the_audience_for_every_container(
    tmp_path: Path, project: Project, pg_state: PgState
) -> None:
    project.write(CONFIG, people("Ada", "Grace"))
    assert project.sync(LOOPS_SYNC_STATE=str(tmp_path / "by-hand")).returncode == 0
    sent_before = len(project.api_requests())

    plan = project.run("plan", str(project.config), LOOPS_SYNC_STATE=pg_state.url)
    assert f"first run of sync `people` in this state ({pg_state.where})" in plan.stdout
    assert ":***@" in pg_state.where

    container = Project(tmp_path / "container", project.emulator)
    container.root.mkdir()
    container.write(CONFIG, people("Ada", "Grace"))
    baseline = container.run(
        "run", str(container.config), "--baseline", LOOPS_SYNC_STATE=pg_state.url, LOOPS_API_KEY=""
    )
    assert baseline.returncode == 0, baseline.stderr
    assert "baseline: recorded 2 contacts and 2 events" in baseline.stdout
    assert SECRET not in plan.stdout + baseline.stdout + baseline.stderr

    unchanged = project.sync(LOOPS_SYNC_STATE=pg_state.url)
    assert unchanged.returncode == 0, unchanged.stderr
    assert "first run" not in unchanged.stderr
    assert len(project.api_requests()) == sent_before
    assert delivered_once(project, 2)
