"""The account against the config, as a library: what is compared, how Loops is asked, and the
check `run_sync()` makes before sending (against a recording MockTransport)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

from sync.account import (
    Account,
    account_problems,
    config_lines,
    create_properties,
    missing_properties,
    read_account,
    require_account,
)
from sync.config import Config, load_config
from sync.errors import AccountError, ExitCode, FatalApiError
from sync.pipeline import Options, run_sync
from sync.sender import RetryPolicy
from tests.fakes import ACCOUNT, ScriptedLoops

KEY = "sk-account-test-0123"
PROPERTIES = "/api/v1/contacts/properties"
LISTS = "/api/v1/lists"
CONFIG = """
    name: t
    source: {csv: people.csv}
    contact:
      email: email
      properties:
        firstName: name
        subscribed: {column: opted_in, type: boolean}
        seats: {column: seats, type: number}
        plan: plan
        source: {value: api}
      mailing_lists:
        clist1: newsletter
"""


def config(tmp_path: Path, text: str = CONFIG) -> Config:
    (tmp_path / "people.csv").write_text(
        "email,name,opted_in,seats,plan,newsletter\na@example.com,A,yes,3,pro,yes\n"
    )
    path = tmp_path / "sync.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return load_config(path, env={"LOOPS_API_KEY": KEY})


def account(properties: dict[str, str], lists: dict[str, str] | None = None) -> Account:
    return Account(team="T", properties=properties, lists={"clist1": "News"} | (lists or {}))


def loops_with(properties: dict[str, str], lists: dict[str, str]) -> ScriptedLoops:
    defaults = {p["key"]: p["type"] for p in ACCOUNT[PROPERTIES]}
    return ScriptedLoops(
        account={
            PROPERTIES: [
                {"key": k, "label": k, "type": t} for k, t in (defaults | properties).items()
            ],
            LISTS: [
                {"id": i, "name": n, "description": None, "isPublic": True}
                for i, n in lists.items()
            ],
        }
    )


def test_an_account_with_every_property_and_list_has_no_problem(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    assert account_problems(loaded, account({"seats": "number", "plan": "string"}), {}) == []


def test_the_default_properties_count_even_when_a_listing_leaves_them_out(
    tmp_path: Path,
) -> None:
    loaded = config(tmp_path)
    only_custom = account({"seats": "number", "plan": "string"})  # list=custom's answer
    assert missing_properties(loaded, only_custom) == {}


def test_problems_name_the_config_key_and_line(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    problems = account_problems(loaded, account({"seats": "string"}), config_lines(loaded))
    assert [(p.path, p.line) for p in problems] == [
        ("contact.properties.seats", 8),
        ("contact.properties.plan", 9),
    ]
    assert "'seats' is a string property in the Loops account" in problems[0].message
    assert "or have the property's type changed in Loops" in problems[0].message
    assert "no contact property 'plan'" in problems[1].message


def test_a_default_property_of_another_type_is_a_problem_loops_cannot_change(
    tmp_path: Path,
) -> None:
    loaded = config(tmp_path, CONFIG.replace("{column: opted_in, type: boolean}", "opted_in"))
    problems = account_problems(loaded, account({"seats": "number", "plan": "string"}), {})
    assert [p.path for p in problems] == ["contact.properties.subscribed"]
    assert "set `type: boolean`" in problems[0].message
    assert "changed in Loops" not in problems[0].message


def test_a_property_spelt_in_another_case_is_named(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    problems = account_problems(loaded, account({"Seats": "number", "plan": "string"}), {})
    assert problems[0].message.endswith("or did you mean 'Seats'?")


def test_a_list_the_account_lacks_shows_the_lists_it_has(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    team = Account("T", {"seats": "number", "plan": "string"}, {"cmOther": "Customers"})
    [problem] = account_problems(loaded, team, {})
    assert problem.path == "contact.mailing_lists.clist1"
    assert problem.message == (
        "the Loops account has no mailing list 'clist1' (its lists: cmOther (Customers))"
    )
    empty = Account("T", {"seats": "number", "plan": "string"}, {})
    assert "it has none" in account_problems(loaded, empty, {})[0].message


def test_read_account_asks_two_things_and_checks_their_shape(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    loops = loops_with({"seats": "number"}, {"clist1": "News"})
    team = read_account(loaded, KEY, team="T", transport=loops.transport, pause=0)
    assert team.properties["seats"] == "number"
    assert team.lists == {"clist1": "News"}
    assert loops.paths() == ["/v1/contacts/properties", "/v1/lists"]
    assert loops.requests[0].url.params.get("list") is None  # all: the defaults' types too

    not_loops = ScriptedLoops(account={})  # answers {"success": true} to everything
    with pytest.raises(FatalApiError, match="does not look like the Loops API"):
        read_account(loaded, KEY, transport=not_loops.transport, pause=0)


@pytest.mark.parametrize("status", [429, 500])
def test_a_busy_loops_is_asked_a_few_times_then_fatal(tmp_path: Path, status: int) -> None:
    loops = ScriptedLoops({PROPERTIES: [status] * 10})
    with pytest.raises(FatalApiError, match="Loops did not answer GET /v1/contacts/properties"):
        read_account(config(tmp_path), KEY, transport=loops.transport, pause=0)
    assert loops.paths().count("/v1/contacts/properties") == 3


def test_create_properties_posts_each_and_says_which_loops_refused(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    refused = httpx.Response(400, json={"success": False, "message": "Property already exists."})
    loops = ScriptedLoops({PROPERTIES: [200, refused]})
    created = create_properties(
        loaded, KEY, {"seats": "number", "plan": "string"}, transport=loops.transport, pause=0
    )
    assert [(c.name, c.type, c.refused) for c in created] == [
        ("seats", "number", None),
        ("plan", "string", "Loops answered 400: Property already exists."),
    ]
    assert loops.bodies("/properties") == [
        {"name": "seats", "type": "number"},
        {"name": "plan", "type": "string"},
    ]


def test_require_account_raises_an_account_error_with_every_problem(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    loops = loops_with({}, {})
    with pytest.raises(AccountError) as caught:
        require_account(loaded, KEY, transport=loops.transport)
    assert caught.value.exit_code == ExitCode.USAGE
    assert [p.path for p in caught.value.problems] == [
        "contact.properties.seats",
        "contact.properties.plan",
        "contact.mailing_lists.clist1",
    ]
    assert "nothing was sent" in str(caught.value)
    assert KEY not in str(caught.value)


def test_run_sync_checks_the_account_before_sending_unless_told_not_to(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    refusing = loops_with({"seats": "number"}, {"clist1": "News"})
    options = Options(transport=refusing.transport, retry=RetryPolicy.immediate())
    with pytest.raises(AccountError) as caught:
        run_sync(loaded, options)
    assert caught.value.report is not None
    assert refusing.paths() == ["/v1/api-key", "/v1/contacts/properties", "/v1/lists"]

    willing = loops_with({"seats": "number", "plan": "string"}, {"clist1": "News"})
    options = Options(transport=willing.transport, retry=RetryPolicy.immediate())
    assert run_sync(loaded, options).contacts_sent == 1

    (tmp_path / "again").mkdir()
    unchecked = ScriptedLoops()  # its account lacks `seats` and `plan`: not asked
    options = Options(
        transport=unchecked.transport, retry=RetryPolicy.immediate(), check_account=False
    )
    assert run_sync(config(tmp_path / "again"), options).contacts_sent == 1
    assert unchecked.paths() == ["/v1/api-key", "/v1/contacts/update"]
