"""`loops-sync check` and the account check before `run`, through the real CLI and the emulator.

The emulated team starts with no custom properties (the projects here are written with
`account=False`), as a fresh Loops account does.
"""

from __future__ import annotations

import socket

import httpx

from tests.e2e.conftest import KEY_CHECK, Project

NEWSLETTER = "cm06f5v0e45nf0ml5754o9cix"  # one of the emulator's sample lists
CONFIG = f"""
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: 200
    contact:
      email: Email
      properties:
        firstName: First Name
        seats: {{column: Seats, type: number}}
        plan: Plan
      mailing_lists:
        {NEWSLETTER}: Newsletter
"""
CSV = """
    Email,First Name,Seats,Plan,Newsletter
    ada@example.com,Ada,3,pro,yes
    grace@example.com,Grace,12,free,no
"""
SEATS_LINE, PLAN_LINE, LIST_LINE = 11, 12, 14


def check(project: Project, *args: str, **env: str) -> tuple[int, str]:
    result = project.run("check", str(project.config), *args, **env)
    assert "Traceback" not in result.stderr
    assert project.emulator.api_key not in result.stdout + result.stderr
    return result.returncode, result.stdout + result.stderr


def account_properties(project: Project) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {project.emulator.api_key}"}
    url = f"{project.emulator.base_url}/v1/contacts/properties?list=custom"
    return {p["key"]: p["type"] for p in httpx.get(url, headers=headers).json()}


def upserts(project: Project) -> list[dict[str, object]]:
    return [r["body"] for r in project.api_requests("/v1/contacts/update")]


def test_all_is_well_once_the_account_has_what_the_config_maps(project: Project) -> None:
    project.write(CONFIG, CSV, account=False)
    project.emulator.set_properties({"seats": "number", "plan": "string"})
    code, out = check(project)
    assert code == 0, out
    assert "account  team 'Loops emulator'" in out
    assert "contact.properties.seats" in out  # the columns, as the mapping reads them
    assert "'Seats' (String) as number: 2 filled" in out
    assert "all is well (exit code 0)" in out
    paths = [r["path"] for r in project.emulator.requests()]
    assert paths == [KEY_CHECK, "/v1/contacts/properties", "/v1/lists"]


def test_a_property_the_account_lacks_is_named_with_its_key_and_line(project: Project) -> None:
    project.write(CONFIG, CSV, account=False)
    project.emulator.set_properties({"seats": "number"})
    code, out = check(project)
    assert code == 2, out
    assert (
        f"contact.properties.plan (line {PLAN_LINE}): the Loops account has no contact property "
        "'plan', so Loops would drop its values without a word; create it (as string) with "
        "`loops-sync check --create-properties`"
    ) in out
    assert "1 problem:" in out


def test_a_property_of_another_type_is_a_problem(project: Project) -> None:
    project.write(CONFIG, CSV, account=False)
    project.emulator.set_properties({"seats": "string", "plan": "string"})
    code, out = check(project)
    assert code == 2, out
    assert (
        f"contact.properties.seats (line {SEATS_LINE}): 'seats' is a string property in the "
        "Loops account, but the mapping sends a number: set `type: string`"
    ) in out


def test_a_mailing_list_the_account_lacks_is_a_problem(project: Project) -> None:
    project.write(
        CONFIG.replace(NEWSLETTER, "cm06f5v0e45nf0ml5754o9cxx")
        + "        Newsletter: Newsletter\n",
        CSV,
        account=False,
    )
    project.emulator.set_properties({"seats": "number", "plan": "string"})
    code, out = check(project)
    assert code == 2, out
    assert (
        f"contact.mailing_lists.cm06f5v0e45nf0ml5754o9cxx (line {LIST_LINE}): the Loops account "
        f"has no mailing list 'cm06f5v0e45nf0ml5754o9cxx'; did you mean '{NEWSLETTER}' "
        "(Newsletter)?"
    ) in out
    assert (
        f"contact.mailing_lists.Newsletter (line {LIST_LINE + 1}): the Loops account has no "
        f"mailing list 'Newsletter': 'Newsletter' is the name of list {NEWSLETTER}; give the "
        "list's id"
    ) in out


def test_create_properties_creates_what_is_missing_with_the_mapped_types(
    project: Project,
) -> None:
    project.write(CONFIG, CSV, account=False)
    code, out = check(project, "--create-properties")
    assert code == 0, out
    assert "created in Loops: contact property 'seats' (number)" in out
    assert "created in Loops: contact property 'plan' (string)" in out
    assert "firstName" not in out.split("created in Loops")[1]  # a default property
    assert account_properties(project) == {"seats": "number", "plan": "string"}
    again_code, again = check(project, "--create-properties")
    assert again_code == 0, again
    assert "created in Loops" not in again


def test_create_properties_says_which_loops_refused(project: Project) -> None:
    project.write(CONFIG.replace("plan: Plan", "plan_name: Plan"), CSV, account=False)
    code, out = check(project, "--create-properties")
    assert code == 2, out
    assert "created in Loops: contact property 'seats' (number)" in out
    assert (
        f"contact.properties.plan_name (line {PLAN_LINE}): the Loops account has no contact "
        "property 'plan_name'"
    ) in out
    assert ("creating it failed: Loops answered 400: The property name must be in camelCase") in out


def test_a_bad_key_exits_3_and_still_shows_the_config_and_source(project: Project) -> None:
    project.write(CONFIG, CSV, account=False)
    code, out = check(project, LOOPS_API_KEY="not-the-key")
    assert code == 3, out
    assert "account  not checked: Loops refused the API key (401" in out
    assert "'Seats' (String) as number: 2 filled" in out
    assert "not-the-key" not in out


def test_an_unreachable_api_exits_3(project: Project) -> None:
    project.write(CONFIG, CSV, account=False)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/api"
    code, out = check(project, LOOPS_BASE_URL=url)
    assert code == 3, out
    assert f"Loops cannot be reached at {url}" in out


def test_without_a_key_the_config_and_source_are_checked_alone(project: Project) -> None:
    project.write(CONFIG, CSV, account=False)
    result = project.run("check", str(project.config), LOOPS_API_KEY="")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "account  not checked: LOOPS_API_KEY is not set" in result.stdout
    assert project.emulator.requests() == []


def test_every_problem_of_config_source_and_account_at_once(project: Project) -> None:
    config = CONFIG.replace(
        "plan: Plan", "plan: Plann\n        signedUpAt: {column: Seats, type: date}"
    )
    config += """    events:
      - name: bigTeam
        email: Email
        when: "CAST(Plan AS INT) > 3"
"""
    project.write(config, CSV, account=False)
    code, out = check(project)
    assert code == 2, out
    assert (
        "contact.properties.plan (line 12): column 'Plann' is not in the source; "
        "did you mean 'Plan'?"
    ) in out
    # The missing column keeps the rows from being mapped, not the account from being checked.
    assert "contact.properties.seats (line 11): the Loops account has no contact property" in out
    project.write(config.replace("Plann", "Plan"), CSV, account=False)
    code, out = check(project)
    assert code == 2, out
    assert "events[0].when (line 19): `CAST(Plan AS INT) > 3` fails on row 1 (Plan = 'pro')" in out
    assert (
        "contact.properties.signedUpAt (line 13): all 2 values of 'Seats' (String) in the first "
        "rows are refused as date, e.g. row 1: '3' is not a date"
    ) in out


def test_check_reads_only_the_first_rows(project: Project) -> None:
    rows = "".join(f"p{i}@example.com,P,{i},pro,yes\n" for i in range(3000))
    project.write(CONFIG, "Email,First Name,Seats,Plan,Newsletter\n" + rows + "bad,B,n/a,x,y\n")
    code, out = check(project)
    assert code == 0, out
    assert "the first 1000 rows read" in out
    assert "n/a" not in out  # past the sample: `plan` and a run report it, check does not


# --- run ------------------------------------------------------------------------------------


def test_run_checks_the_account_once_and_refuses_to_send_when_it_lacks_a_property(
    project: Project,
) -> None:
    project.write(CONFIG, CSV, account=False)
    project.emulator.set_properties({"seats": "number"})
    result = project.sync()
    assert result.returncode == 2, result.stderr
    assert "the Loops account does not match the config (1 problem); nothing was sent" in (
        result.stderr
    )
    assert f"contact.properties.plan (line {PLAN_LINE}): the Loops account has no" in result.stderr
    assert "--create-properties" in result.stderr
    assert "--no-check" in result.stderr
    paths = [r["path"] for r in project.emulator.requests()]
    assert paths == [KEY_CHECK, "/v1/contacts/properties", "/v1/lists"]  # three, nothing sent
    history = project.run("history", str(project.config))
    assert "the Loops account does not match the config" in history.stdout


def test_run_no_check_sends_anyway(project: Project) -> None:
    project.write(CONFIG, CSV, account=False)
    result = project.sync("--no-check")
    assert result.returncode == 0, result.stderr
    assert len(upserts(project)) == 2
    paths = {r["path"] for r in project.emulator.requests()}
    assert "/v1/contacts/properties" not in paths
    assert "/v1/lists" not in paths


def test_run_sends_once_the_properties_are_created(project: Project) -> None:
    project.write(CONFIG, CSV, account=False)
    assert project.sync().returncode == 2
    assert upserts(project) == []
    assert check(project, "--create-properties")[0] == 0
    result = project.sync()
    assert result.returncode == 0, result.stderr
    contacts = {c["email"]: c for c in project.emulator.contacts()}
    assert contacts["ada@example.com"]["seats"] == 3
    assert contacts["ada@example.com"]["plan"] == "pro"


def test_run_with_a_bad_key_exits_3_before_the_account_is_asked(project: Project) -> None:
    project.write(CONFIG, CSV, account=False)
    result = project.sync(LOOPS_API_KEY="not-the-key")
    assert result.returncode == 3, result.stderr
    assert [r["path"] for r in project.emulator.requests()] == [KEY_CHECK]
