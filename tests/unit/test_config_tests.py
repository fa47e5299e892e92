"""Config tests: a case's rows go through the real mapping and planner, and what differs from the
case's expectations is reported request by request, field by field, row by row."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.check import check_config
from sync.config import load_config
from sync.config_tests import CaseResult, cases_report, run_config_tests
from sync.errors import ConfigError
from tests.unit.conftest import WriteConfig

MAPPING = """
    name: leads
    source:
      csv: leads.csv
    contact:
      email: Email
      properties:
        firstName: First Name
        seats: {column: Seats, type: number}
        trialEnds: {column: Trial Ends, type: date}
        source: {value: clay}
      mailing_lists:
        newsletter: Newsletter
    events:
      - name: paidPlanLead
        email: Email
        when: "Plan IN ('pro', 'team')"
        properties:
          plan: Plan
"""
# 2024-03-01T00:00:00Z in Unix milliseconds: how Loops takes a date.
MARCH_1 = 1_709_251_200_000


def results(write_config: WriteConfig, tests: str, mapping: str = MAPPING) -> list[CaseResult]:
    path = write_config(mapping + tests)
    return run_config_tests(load_config(path, env={}))


def details(result: CaseResult) -> dict[str, tuple[str, ...]]:
    return {difference.subject: difference.details for difference in result.differences}


def test_a_case_passes_when_the_rows_produce_exactly_the_expected_requests(
    write_config: WriteConfig,
) -> None:
    """CSV-like text in, typed JSON out: '3' a number, 'yes' true, a YAML date Unix ms."""
    [result] = results(
        write_config,
        """
    tests:
      - name: a pro lead
        rows:
          - {Email: ada@acme.io, First Name: Ada, Seats: "3", Trial Ends: "2024-03-01",
             Newsletter: "yes", Plan: pro}
        requests:
          - contact:
              email: ada@acme.io
              firstName: Ada
              seats: 3
              trialEnds: 2024-03-01
              source: clay
              mailingLists: {newsletter: true}
          - event:
              eventName: paidPlanLead
              email: ada@acme.io
              eventProperties: {plan: pro}
    """,
    )
    assert result.passed, result.differences
    assert result.name == "a pro lead"
    assert result.path == "tests[0]"


def test_a_body_that_differs_is_shown_field_by_field(write_config: WriteConfig) -> None:
    [result] = results(
        write_config,
        """
    tests:
      - name: casing
        rows:
          - {Email: ada@acme.io, First Name: ada, Trial Ends: "2024-03-01", Plan: free}
        requests:
          - contact:
              email: ada@acme.io
              firstName: Ada
              seats: 3
              source: clay
    """,
    )
    assert not result.passed
    assert details(result) == {
        "contact for ada@acme.io (PUT /v1/contacts/update, from row 1)": (
            'firstName: expected "Ada", got "ada"',
            "seats: expected 3, not sent",
            f"trialEnds: not expected, sent {MARCH_1}",
        )
    }


def test_the_expected_reject_reason_must_be_the_one_given(write_config: WriteConfig) -> None:
    tests = """
    tests:
      - name: a bad email is set aside
        rows:
          - {Email: ada.acme.io, Plan: pro}
        requests: []
        rejects:
          - row: 1
            column: Email
            reason: {reason}
    """
    [passing] = results(write_config, tests.replace("{reason}", "not a valid email"))
    assert passing.passed, passing.differences
    [failing] = results(write_config, tests.replace("{reason}", "too long"))
    assert details(failing) == {
        "row 1": (
            "rejected because \"'ada.acme.io' is not a valid email address\", expected a "
            "reason containing 'too long'",
        )
    }


def test_a_reject_not_expected_and_one_that_did_not_happen_both_fail(
    write_config: WriteConfig,
) -> None:
    [result] = results(
        write_config,
        """
    tests:
      - name: swapped
        rows:
          - {Email: ada@acme.io, Seats: many}
          - {Email: grace@acme.io, Seats: "2"}
        requests:
          - contact: {email: grace@acme.io, seats: 2, source: clay}
        rejects:
          - row: 2
    """,
    )
    assert details(result) == {
        "row 1": ("rejected, not expected: Seats: 'many' is not a number",),
        "row 2": ("expected to be rejected (for any reason), but was not",),
    }


EVENTS_ONLY = """
    name: orders
    source:
      parquet: orders.parquet
    events:
      - name: orderPlaced
        user_id: user_id
        once_per: [order_id]
        properties:
          total: {column: total, type: number}
          paid: {column: paid, type: boolean}
"""


def test_a_row_produces_an_event_with_its_properties(write_config: WriteConfig) -> None:
    """A Parquet source keeps YAML's types: a number and a boolean go through as they are."""
    tests = """
    tests:
      - name: an order
        rows:
          - {user_id: u1, order_id: 17, total: 12.5, paid: true}
        requests:
          - event:
              eventName: orderPlaced
              userId: u1
              eventProperties: {total: {total}, paid: true}
    """
    [passing] = results(write_config, tests.replace("{total}", "12.5"), EVENTS_ONLY)
    assert passing.passed, passing.differences
    [failing] = results(write_config, tests.replace("{total}", "13"), EVENTS_ONLY)
    assert details(failing) == {
        "event 'orderPlaced' for u1 (POST /v1/events/send, from row 1)": (
            "eventProperties.total: expected 13, got 12.5",
        )
    }


def test_true_is_not_1(write_config: WriteConfig) -> None:
    [result] = results(
        write_config,
        """
    tests:
      - name: paid
        rows:
          - {user_id: u1, order_id: 17, paid: true}
        requests:
          - event: {eventName: orderPlaced, userId: u1, eventProperties: {paid: 1}}
    """,
        EVENTS_ONLY,
    )
    assert details(result) == {
        "event 'orderPlaced' for u1 (POST /v1/events/send, from row 1)": (
            "eventProperties.paid: expected 1, got true",
        )
    }


def test_the_when_filter_decides_which_rows_make_the_event(write_config: WriteConfig) -> None:
    passing, failing = results(
        write_config,
        """
    tests:
      - name: only the team lead makes the event
        rows:
          - {Email: ada@acme.io, Plan: free}
          - {Email: grace@acme.io, Plan: team}
        requests:
          - contact: {email: ada@acme.io, source: clay}
          - contact: {email: grace@acme.io, source: clay}
          - event: {eventName: paidPlanLead, email: grace@acme.io, eventProperties: {plan: team}}
      - name: a free lead makes the event too (it does not)
        rows:
          - {Email: ada@acme.io, Plan: free}
          - {Email: grace@acme.io, Plan: team}
        requests:
          - contact: {email: ada@acme.io, source: clay}
          - event: {eventName: paidPlanLead, email: ada@acme.io, eventProperties: {plan: free}}
          - contact: {email: grace@acme.io, source: clay}
    """,
    )
    assert passing.passed, passing.differences
    assert details(failing) == {
        "event 'paidPlanLead' for grace@acme.io (POST /v1/events/send, from row 2)": (
            'email: expected "ada@acme.io", got "grace@acme.io"',
            'eventProperties.plan: expected "free", got "team"',
        )
    }


def test_missing_and_unexpected_requests_show_their_bodies(write_config: WriteConfig) -> None:
    [result] = results(
        write_config,
        """
    tests:
      - name: one person, not two
        rows:
          - {Email: ada@acme.io}
        requests:
          - contact: {email: grace@acme.io, source: clay}
          - contact: {email: ada@acme.io, source: clay}
          - event: {eventName: paidPlanLead, email: ada@acme.io}
    """,
    )
    assert details(result) == {
        "contact for grace@acme.io (PUT /v1/contacts/update)": (
            "expected, but not produced",
            '{"email":"grace@acme.io","source":"clay"}',
        ),
        "event 'paidPlanLead' for ada@acme.io (POST /v1/events/send)": (
            "expected, but not produced",
            '{"email":"ada@acme.io","eventName":"paidPlanLead"}',
        ),
    }


def test_a_filter_that_cannot_run_on_a_row_fails_the_case(write_config: WriteConfig) -> None:
    """A run would stop on such a row, so the case cannot pass whatever it expects."""
    mapping = MAPPING.replace("Plan IN ('pro', 'team')", "CAST(Seats AS INT) > 3")
    [result] = results(
        write_config,
        """
    tests:
      - name: seats unknown
        rows:
          - {Email: ada@acme.io, Seats: "n/a"}
        requests:
          - contact: {email: ada@acme.io, source: clay}
    """,
        mapping,
    )
    [difference] = result.differences
    assert difference.subject == "the rows cannot be synced (a run would stop)"
    assert "CAST(Seats AS INT) > 3" in difference.details[0]


def test_a_malformed_case_is_a_config_problem_at_its_key_and_line(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        MAPPING
        + """
    tests:
      - name: both kinds
        rows:
          - {Email: [ada@acme.io]}
        requests:
          - contact: {email: ada@acme.io}
            event: {eventName: paidPlanLead}
      - name: nothing expected
        rows:
          - {Email: ada@acme.io}
        rejectz: []
    """
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    found = {(p.path, p.line): p.message for p in raised.value.problems}
    assert "not a list or mapping" in found[("tests[0].rows[0].Email", 23)]
    assert "exactly one of 'contact'" in found[("tests[0].requests[0]", 25)]
    assert found[("tests[1].rejectz", 30)] == "unknown key 'rejectz'; did you mean 'rejects'?"


def test_a_config_without_tests_cannot_pass_test(write_config: WriteConfig) -> None:
    config = load_config(write_config(MAPPING), env={})
    with pytest.raises(ConfigError) as raised:
        cases_report(config)
    assert [p.path for p in raised.value.problems] == ["tests"]


def test_check_reports_a_failing_case_as_a_problem_of_the_config(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "leads.csv").write_text("Email,First Name,Seats,Trial Ends,Newsletter,Plan\n")
    tests = """
    tests:
      - name: ada
        rows:
          - {Email: ada@acme.io, First Name: Ada}
        requests:
          - contact: {email: ada@acme.io, firstName: {name}, source: clay}
    """
    passing = check_config(
        load_config(write_config(MAPPING + tests.replace("{name}", "Ada")), env={})
    )
    assert passing.exit_code == 0, passing.problems
    assert passing.tests == "1 case: 1 pass, 0 fail"
    failing = check_config(
        load_config(write_config(MAPPING + tests.replace("{name}", "Bo")), env={})
    )
    assert failing.exit_code == 2
    [problem] = failing.problems
    assert (problem.path, problem.line) == ("tests[0]", 21)
    assert 'firstName: expected "Bo", got "Ada"' in problem.message
