"""`loops-sync test` and the `tests:` cases in `check`, through the real CLI.

The emulator runs and the key is set, as in CI where the config tests run beside real syncs: the
tests must still send nothing.
"""

from __future__ import annotations

from tests.e2e.conftest import Project

CONFIG = """
    name: leads
    source:
      csv: people.csv
    contact:
      email: Email
      properties:
        firstName: First Name
        seats: {{column: Seats, type: number}}
    events:
      - name: paidPlanLead
        email: Email
        when: "Plan = 'pro'"
    tests:
      - name: a pro lead
        rows:
          - {{Email: ada@example.com, First Name: Ada, Seats: "3", Plan: pro}}
        requests:
          - contact: {{email: ada@example.com, firstName: {first_name}, seats: 3}}
          - event: {{eventName: paidPlanLead, email: ada@example.com}}
      - name: a bad email is set aside
        rows:
          - {{Email: not-an-email, Plan: pro}}
        rejects:
          - row: 1
            column: Email
"""
CSV = """
    Email,First Name,Seats,Plan
    grace@example.com,Grace,12,free
"""
CASE_LINE = 15  # `- name: a pro lead`


def test_passing_cases_exit_0_and_send_nothing(project: Project) -> None:
    project.write(CONFIG.format(first_name="Ada"), CSV)
    result = project.run("test", str(project.config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "  pass  a pro lead\n  pass  a bad email is set aside\n" in result.stdout
    assert "all 2 cases passed (exit code 0)" in result.stdout
    assert project.emulator.requests() == []
    assert not project.state.exists()  # no ledger, no rejects file


def test_a_failing_case_exits_1_and_shows_the_difference(project: Project) -> None:
    project.write(CONFIG.format(first_name="Adah"), CSV)
    result = project.run("test", str(project.config))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"  FAIL  a pro lead (tests[0], line {CASE_LINE})" in result.stdout
    assert "contact for ada@example.com (PUT /v1/contacts/update, from row 1)" in result.stdout
    assert 'firstName: expected "Adah", got "Ada"' in result.stdout
    assert "  pass  a bad email is set aside" in result.stdout
    assert "1 of 2 cases failed (exit code 1)" in result.stdout
    assert project.emulator.requests() == []


def test_a_malformed_tests_section_exits_2_naming_the_key_and_line(project: Project) -> None:
    config = CONFIG.format(first_name="Ada").replace("- row: 1", "- row: 2")
    project.write(config, CSV)
    result = project.run("test", str(project.config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "tests[1] (line 21): rejects name row 2, but the case has 1 row" in result.stderr


def test_a_config_without_tests_exits_2(project: Project) -> None:
    project.write(CONFIG.format(first_name="Ada").split("    tests:")[0], CSV)
    result = project.run("test", str(project.config))
    assert result.returncode == 2
    assert "tests: none given" in result.stderr


def test_check_runs_the_cases_and_a_failing_one_is_a_problem(project: Project) -> None:
    project.write(CONFIG.format(first_name="Ada"), CSV)
    passing = project.run("check", str(project.config))
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "  tests    2 cases: 2 pass, 0 fail" in passing.stdout

    project.write(CONFIG.format(first_name="Adah"), CSV)
    failing = project.run("check", str(project.config))
    assert failing.returncode == 2
    assert f"tests[0] (line {CASE_LINE}): test 'a pro lead' fails: contact for" in failing.stdout
    assert 'firstName: expected "Adah", got "Ada"' in failing.stdout
