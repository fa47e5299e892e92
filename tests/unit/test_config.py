"""The config: what loads, and how every mistake in it is reported (all at once, with a place)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from sync.config import Config, load_config
from sync.errors import ConfigError, ConfigProblem
from sync.source_columns import check_columns
from sync.sources import read_source
from tests.unit.conftest import WriteConfig

REPO = Path(__file__).resolve().parents[2]
SAMPLE_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

VALID = """
name: clay-leads
source:
  csv: exports/leads.csv
loops:
  rate_limit: 5
contact:
  email: Email
  user_id: id
  properties:
    firstName: First Name
    seats: {column: seats, type: number}
    source: {value: clay}
  mailing_lists:
    cm06f5v0e45nf0ml5754o9cix: newsletter
events:
  - name: signup
    email: Email
    when: "\\"Plan\\" = 'pro'"
    properties: {plan: Plan}
    once_per: [order_id]
"""


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return caught.value.problems


def problem_at(problems: list[ConfigProblem], path: str) -> ConfigProblem:
    found = [problem for problem in problems if problem.path == path]
    assert found, f"no problem at {path!r} in {problems}"
    return found[0]


# --- a valid config -----------------------------------------------------------------------------


def test_a_valid_config_loads_with_its_values_and_defaults(write_config: WriteConfig) -> None:
    config = load_config(write_config(VALID), env={})

    assert config.name == "clay-leads"
    assert config.spec.source.kind == "csv"
    assert config.spec.loops.rate_limit == 5
    assert config.spec.loops.api_key_env == "LOOPS_API_KEY"
    assert config.base_url == "https://app.loops.so/api"
    contact = config.spec.contact
    assert contact is not None
    assert contact.properties["firstName"].column == "First Name"
    assert contact.properties["seats"].value_type == "number"
    assert contact.properties["source"].value == "clay"
    assert contact.empty == "skip"
    assert config.spec.events[0].once_per == ["order_id"]
    assert config.source_columns() == [
        "Email",
        "id",
        "First Name",
        "seats",
        "newsletter",
        "Plan",
        "order_id",
    ]


# --- every problem at once, each with its place ---------------------------------------------------


def test_every_problem_is_reported_together_with_its_line(write_config: WriteConfig) -> None:
    path = write_config(
        """
        name: test
        evnets: []
        source:
          csv: leads.csv
        loops:
          rate_limit: 0
        contact:
          emial: Email
          email: Email
          properties:
            id: X
            seats: {column: seats, type: integer}
        """
    )
    problems = problems_of(path)

    assert {problem.path for problem in problems} == {
        "evnets",
        "loops.rate_limit",
        "contact.emial",
        "contact.properties.id",
        "contact.properties.seats.type",
    }
    evnets = problem_at(problems, "evnets")
    assert "did you mean 'events'?" in evnets.message
    assert evnets.line == 2
    emial = problem_at(problems, "contact.emial")
    assert "unknown key 'emial'" in emial.message
    assert "did you mean 'email'?" in emial.message
    assert emial.line == 8
    assert problem_at(problems, "loops.rate_limit").line == 6
    assert problem_at(problems, "contact.properties.seats.type").line == 12
    reserved = problem_at(problems, "contact.properties.id")
    assert "'id' is reserved by Loops" in reserved.message
    assert reserved.line == 11


def test_the_error_message_lists_each_problem_with_its_place(write_config: WriteConfig) -> None:
    path = write_config(
        """
        name: test
        source: {csv: leads.csv}
        contact:
          emial: Email
          email: Email
        """
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    assert str(path) in str(caught.value)
    assert "contact.emial (line 4)" in str(caught.value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("yaml_text", "path", "suggestion"),
    [
        (
            "events:\n  - name: e\n    email: Email\n    nmae: x\n",
            "events[0].nmae",
            "name",
        ),
        (
            "contact:\n  email: Email\n  properties:\n    firstName: {colum: First}\n",
            "contact.properties.firstName.colum",
            "column",
        ),
        ("contact:\n  email: Email\n  mailing_list: {}\n", "contact.mailing_list", "mailing_lists"),
        ("contact: {email: Email}\nloops: {rate_limt: 5}\n", "loops.rate_limt", "rate_limit"),
    ],
)
def test_misspelt_keys_get_the_closest_valid_name(
    write_config: WriteConfig, yaml_text: str, path: str, suggestion: str
) -> None:
    config = write_config("name: test\nsource: {csv: leads.csv}\n" + yaml_text)
    problem = problem_at(problems_of(config), path)
    assert f"did you mean '{suggestion}'?" in problem.message


@pytest.mark.parametrize("reserved", ["id", "listId", "softDeleteAt", "teamId", "updatedAt"])
def test_reserved_property_names_are_refused(write_config: WriteConfig, reserved: str) -> None:
    path = write_config(
        f"""
        name: test
        source: {{csv: leads.csv}}
        contact:
          email: Email
          properties:
            {reserved}: X
        events:
          - name: signup
            email: Email
            properties:
              {reserved}: X
        """
    )
    problems = problems_of(path)

    contact = problem_at(problems, f"contact.properties.{reserved}")
    assert f"'{reserved}' is reserved by Loops" in contact.message
    assert contact.line == 6
    event = problem_at(problems, f"events[0].properties.{reserved}")
    assert f"'{reserved}' is reserved by Loops" in event.message
    assert event.line == 11


def test_a_reserved_name_is_reported_together_with_a_typo_in_its_section(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        """
        name: test
        source: {csv: leads.csv}
        contact:
          emial: Email
          email: Email
          properties: {teamId: X}
        events:
          - name: signup
            email: Email
            nmae: x
            when: "Plan = = 'x'"
            properties: {listId: X}
        """
    )
    paths = {problem.path for problem in problems_of(path)}

    assert {
        "contact.emial",
        "contact.properties.teamId",
        "events[0].nmae",
        "events[0].when",
        "events[0].properties.listId",
    } <= paths


@pytest.mark.parametrize("name", ["email", "userId", "mailingLists"])
def test_a_property_cannot_shadow_the_sections_own_keys(
    write_config: WriteConfig, name: str
) -> None:
    path = write_config(
        f"name: test\nsource: {{csv: a.csv}}\ncontact:\n  email: E\n  properties: {{{name}: X}}\n"
    )
    problem = problem_at(problems_of(path), f"contact.properties.{name}")
    assert "set by the section's own key" in problem.message


def test_a_property_name_must_be_a_loops_name(write_config: WriteConfig) -> None:
    path = write_config(
        "name: t\nsource: {csv: a.csv}\ncontact:\n  email: E\n  properties: {first name: X}\n"
    )
    problem = problem_at(problems_of(path), "contact.properties.first name")
    assert "not a valid Loops property name" in problem.message


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ('""', "an event needs a name (this one is blank)"),
        ('"   "', "an event needs a name (this one is blank)"),
        ("signup:done", "'signup:done' contains ':', which Loops refuses in event names"),
    ],
)
def test_an_event_name_loops_refuses_is_refused_with_every_other_problem(
    write_config: WriteConfig, name: str, message: str
) -> None:
    path = write_config(
        f"""
        name: t
        source: {{csv: a.csv}}
        contact:
          emial: Email
          email: Email
        events:
          - name: ok
            email: Email
          - name: {name}
            email: Email
            nmae: x
        """
    )
    problems = problems_of(path)

    problem = problem_at(problems, "events[1].name")
    assert problem.message == message
    assert problem.line == 9
    assert {"contact.emial", "events[1].nmae"} <= {p.path for p in problems}


@pytest.mark.parametrize("name", ["eventName", "eventProperties"])
def test_a_contact_property_cannot_take_the_name_of_an_event_request_field(
    write_config: WriteConfig, name: str
) -> None:
    """A contact's upsert may ride on an event request, whose fields these are."""
    path = write_config(
        f"""
        name: t
        source: {{csv: a.csv}}
        contact:
          email: Email
          properties:
            firstName: First
            {name}: X
            id: Y
        """
    )
    problems = problems_of(path)

    problem = problem_at(problems, f"contact.properties.{name}")
    assert problem.message == f"'{name}' is a field of Loops' requests, not a contact property"
    assert problem.line == 7
    assert problem_at(problems, "contact.properties.id").line == 8


@pytest.mark.parametrize(
    ("source", "found"),
    [("{}", "none"), ("{csv: a.csv, parquet: b.parquet}", "csv, parquet")],
)
def test_a_source_needs_exactly_one_kind(
    write_config: WriteConfig, source: str, found: str
) -> None:
    path = write_config(f"name: test\nsource: {source}\ncontact: {{email: Email}}\n")
    problem = problem_at(problems_of(path), "source")
    assert "exactly one of csv, parquet, excel, sql" in problem.message
    assert f"found: {found}" in problem.message
    assert problem.line == 2


def test_bad_yaml_is_reported_with_its_line(write_config: WriteConfig) -> None:
    path = write_config("name: test\nsource:\n  csv: a.csv\ncontact: email: Email\n")
    [problem] = problems_of(path)
    assert "not valid YAML" in problem.message
    assert problem.line == 4


def test_a_file_that_is_not_a_mapping_is_refused(write_config: WriteConfig) -> None:
    [problem] = problems_of(write_config("- just\n- a list\n"))
    assert "mapping" in problem.message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing, env={})
    assert str(missing) in str(caught.value)
    assert "file not found" in caught.value.problems[0].message


@pytest.mark.parametrize("kind", ["integer", "text", "datetime", "json"])
def test_only_the_four_loops_property_types_are_accepted(
    write_config: WriteConfig, kind: str
) -> None:
    path = write_config(
        f"name: t\nsource: {{csv: a.csv}}\ncontact:\n  email: E\n"
        f"  properties:\n    seats: {{column: seats, type: {kind}}}\n"
    )
    problem = problem_at(problems_of(path), "contact.properties.seats.type")
    assert "'string', 'number', 'boolean' or 'date'" in problem.message
    assert problem.line == 6


@pytest.mark.parametrize("kind", ["string", "number", "boolean", "date"])
def test_the_four_loops_property_types_load(write_config: WriteConfig, kind: str) -> None:
    path = write_config(
        f"name: t\nsource: {{csv: a.csv}}\ncontact:\n  email: E\n"
        f"  properties:\n    seats: {{column: seats, type: {kind}}}\n"
    )
    contact = load_config(path, env={}).spec.contact
    assert contact is not None
    assert contact.properties["seats"].value_type == kind


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("integr", "number"),
        ("integer", "number"),
        ("int", "number"),
        ("float", "number"),
        ("decimal", "number"),
        ("Number", "number"),
        ("bool", "boolean"),
        ("booleen", "boolean"),
        ("datetime", "date"),
        ("timestamp", "date"),
        ("text", "string"),
        ("str", "string"),
        ("strng", "string"),
    ],
)
def test_an_unknown_type_names_the_value_and_the_closest_type(
    write_config: WriteConfig, given: str, meant: str
) -> None:
    path = write_config(
        f"name: t\nsource: {{csv: a.csv}}\ncontact:\n  email: E\n"
        f"  properties:\n    seats: {{column: seats, type: {given}}}\n"
    )
    problem = problem_at(problems_of(path), "contact.properties.seats.type")
    assert problem.message == (
        f"unknown type '{given}'; did you mean '{meant}'? "
        "(a type is 'string', 'number', 'boolean' or 'date')"
    )
    assert problem.line == 6


def test_an_unknown_type_with_no_close_type_lists_the_four(write_config: WriteConfig) -> None:
    path = write_config(
        "name: t\nsource: {csv: a.csv}\nevents:\n  - name: e\n    email: E\n"
        "    properties:\n      blob: {column: blob, type: json}\n"
    )
    problem = problem_at(problems_of(path), "events[0].properties.blob.type")
    assert (
        problem.message == "unknown type 'json' (a type is 'string', 'number', 'boolean' or 'date')"
    )


def test_a_bad_when_is_refused_with_its_line(write_config: WriteConfig) -> None:
    path = write_config(
        """
        name: t
        source: {csv: a.csv}
        events:
          - name: signup
            email: Email
            when: "Plan = = 'pro' (("
        """
    )
    problem = problem_at(problems_of(path), "events[0].when")
    assert "not a valid SQL condition" in problem.message
    assert problem.line == 6


@pytest.mark.parametrize("rate", ["0", "-1", "-0.5"])
def test_the_rate_limit_must_be_positive(write_config: WriteConfig, rate: str) -> None:
    path = write_config(
        f"name: t\nsource: {{csv: a.csv}}\ncontact: {{email: E}}\nloops:\n  rate_limit: {rate}\n"
    )
    problem = problem_at(problems_of(path), "loops.rate_limit")
    assert "greater than 0" in problem.message
    assert problem.line == 5


def test_a_config_with_no_work_is_refused(write_config: WriteConfig) -> None:
    [problem] = problems_of(write_config("name: t\nsource: {csv: a.csv}\n"))
    assert "'contact' section, an 'events' list, or both" in problem.message


def test_a_section_needs_an_identity_column(write_config: WriteConfig) -> None:
    path = write_config("name: t\nsource: {csv: a.csv}\ncontact:\n  properties: {plan: Plan}\n")
    assert "'email', of 'user_id'" in problem_at(problems_of(path), "contact").message


# --- paths and the environment ----------------------------------------------------------------


def test_paths_are_relative_to_the_config_file_not_the_working_directory(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(VALID, name="configs/sync.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load_config(path, env={})

    assert config.resolve("exports/leads.csv") == tmp_path / "configs" / "exports" / "leads.csv"
    assert config.resolve("../data/x.csv") == tmp_path / "configs" / ".." / "data" / "x.csv"
    assert config.resolve(str(tmp_path / "abs.csv")) == tmp_path / "abs.csv"


def test_loops_base_url_in_the_environment_overrides_the_file(write_config: WriteConfig) -> None:
    path = write_config(VALID.replace("loops:\n", "loops:\n  base_url: https://file.test/api\n"))

    assert load_config(path, env={}).base_url == "https://file.test/api"
    from_env = load_config(path, env={"LOOPS_BASE_URL": "http://127.0.0.1:8123/api/"})
    assert from_env.base_url == "http://127.0.0.1:8123/api"


def test_a_loops_base_url_without_a_scheme_is_a_config_error(write_config: WriteConfig) -> None:
    problems = problems_of(write_config(VALID), env={"LOOPS_BASE_URL": "app.loops.so/api"})
    assert problem_at(problems, "LOOPS_BASE_URL").message == "must start with http:// or https://"


def test_the_default_state_dir_is_beside_the_config(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    config = load_config(write_config(VALID, name="configs/sync.yaml"), env={})
    assert config.state_dir == (tmp_path / "configs" / ".loops-sync").resolve()


def test_state_in_the_file_is_relative_to_the_config(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    path = write_config(VALID + "state: ../state\n", name="configs/sync.yaml")
    assert load_config(path, env={}).state_dir == (tmp_path / "state").resolve()


def test_loops_sync_state_overrides_the_state_dir(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(VALID + "state: from-file\n", name="configs/sync.yaml")
    absolute = tmp_path / "absolute-state"
    assert load_config(path, env={"LOOPS_SYNC_STATE": str(absolute)}).state_dir == absolute

    # A relative path in the environment is relative to where the command runs, as in a shell.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    relative = load_config(path, env={"LOOPS_SYNC_STATE": "state"})
    assert relative.state_dir == (cwd / "state").resolve()


# --- columns, checked against the source --------------------------------------------------------


def loaded(write_config: WriteConfig, text: str = VALID) -> Config:
    return load_config(write_config(text), env={})


def test_check_columns_accepts_a_source_with_every_mapped_column(
    write_config: WriteConfig,
) -> None:
    schema = dict.fromkeys(
        ["Email", "id", "First Name", "seats", "newsletter", "Plan", "order_id", "extra"],
        pl.String,
    )
    check_columns(loaded(write_config), schema)


def test_a_missing_column_names_it_and_suggests_the_close_one(write_config: WriteConfig) -> None:
    config = loaded(write_config, VALID.replace("First Name", "First name"))
    schema = dict.fromkeys(
        ["Email", "id", "First Name", "seats", "newsletter", "Plan", "order_id"], pl.String
    )
    with pytest.raises(ConfigError) as caught:
        check_columns(config, schema)

    [problem] = caught.value.problems
    assert problem.path == "contact.properties.firstName"
    assert "column 'First name' is not in the source" in problem.message
    assert "did you mean 'First Name'?" in problem.message


def test_every_missing_column_is_reported_at_once(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as caught:
        check_columns(loaded(write_config), {"Email": pl.String, "unrelated": pl.String})

    paths = {problem.path for problem in caught.value.problems}
    assert paths == {
        "contact.user_id",
        "contact.properties.firstName",
        "contact.properties.seats",
        "contact.mailing_lists.cm06f5v0e45nf0ml5754o9cix",
        "events[0].properties.plan",
        "events[0].once_per[0]",
        "events[0].when",
    }
    # Far from every column: the message lists what the source has instead.
    seats = problem_at(caught.value.problems, "contact.properties.seats")
    assert "columns: Email, unrelated" in seats.message


def test_a_when_on_a_missing_column_is_a_config_error(write_config: WriteConfig) -> None:
    config = loaded(
        write_config,
        "name: t\nsource: {csv: a.csv}\nevents:\n"
        '  - {name: signup, email: Email, when: "\\"Tier\\" = \'pro\'"}\n',
    )
    with pytest.raises(ConfigError) as caught:
        check_columns(config, {"Email": pl.String, "Plan": pl.String})
    assert problem_at(caught.value.problems, "events[0].when").message.startswith("cannot run")


NESTED = """
name: t
source: {parquet: users.parquet}
contact:
  email: Email
  user_id: ids
  properties:
    tags: tags
    firstName: First
  mailing_lists:
    list1: flags
events:
  - name: signup
    email: Email
    properties: {where: address}
    once_per: [tags]
"""


def test_a_nested_column_mapped_as_a_value_names_the_key_the_column_and_its_type(
    write_config: WriteConfig,
) -> None:
    """A Parquet or PostgreSQL list (text[]) or struct column holds many values per row."""
    schema = {
        "Email": pl.String,
        "ids": pl.List(pl.Int64),
        "tags": pl.List(pl.String),
        "First": pl.String,
        "flags": pl.Array(pl.Boolean, 2),
        "address": pl.Struct({"city": pl.String}),
    }
    with pytest.raises(ConfigError) as caught:
        check_columns(loaded(write_config, NESTED), schema)

    def nested(column: str, dtype: str) -> str:
        return (
            f"column '{column}' holds {dtype}, many values per row; map a column with one "
            "value per row (in SQL, select one element or join them)"
        )

    problems = {problem.path: problem.message for problem in caught.value.problems}
    assert problems == {
        "contact.user_id": nested("ids", "List(Int64)"),
        "contact.properties.tags": nested("tags", "List(String)"),
        "contact.mailing_lists.list1": nested("flags", "Array(Boolean, shape=(2,))"),
        "events[0].properties.where": nested("address", "Struct({'city': String})"),
        "events[0].once_per[0]": nested("tags", "List(String)"),
    }


def test_a_nested_column_the_config_does_not_map_is_fine(write_config: WriteConfig) -> None:
    schema = {
        "Email": pl.String,
        "ids": pl.String,
        "tags": pl.String,
        "First": pl.String,
        "flags": pl.String,
        "address": pl.String,
        "history": pl.List(pl.Struct({"at": pl.Datetime()})),
    }
    check_columns(loaded(write_config, NESTED), schema)


# --- the API key stays out of every message -----------------------------------------------------


def test_the_api_key_never_appears_in_a_config_error(write_config: WriteConfig) -> None:
    key = "sk_live_9f8e7d6c5b4a39281706"
    env = {"LOOPS_API_KEY": key, "MY_KEY": key}
    broken = write_config(
        f"""
        name: t
        source: {{csv: a.csv}}
        loops:
          api_key_env: MY_KEY
          api_key: {key}
          rate_limit: {key}
        contact:
          email: Email
          properties:
            firstName: {{value: {key}, type: number, colum: x}}
        """
    )
    messages = []
    with pytest.raises(ConfigError) as caught:
        load_config(broken, env=env)
    messages.append(str(caught.value))

    with pytest.raises(ConfigError) as caught:
        load_config(write_config(VALID), env={**env, "LOOPS_BASE_URL": key})
    messages.append(str(caught.value))

    config = load_config(write_config(VALID), env=env)
    assert config.api_key is not None
    assert config.api_key.get_secret_value() == key
    with pytest.raises(ConfigError) as caught:
        check_columns(config, {"Email": pl.String})
    messages.append(str(caught.value))

    assert all(key not in message for message in messages), messages


def test_the_api_key_is_read_once_trimmed_and_never_printed(write_config: WriteConfig) -> None:
    key = "sk_live_9f8e7d6c5b4a39281706"
    env = {"MY_KEY": f" {key}\r\n"}
    text = VALID.replace("  rate_limit: 5\n", "  rate_limit: 5\n  api_key_env: MY_KEY\n")
    config = load_config(write_config(text), env=env)
    env.clear()  # resolved by load_config: the environment is not read again
    assert config.api_key is not None
    assert config.api_key.get_secret_value() == key
    assert key not in repr(config)
    assert key not in str(config)
    assert load_config(write_config(VALID), env={"LOOPS_API_KEY": " \n"}).api_key is None


# --- the sample configs stay true ---------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLE_CONFIGS, ids=lambda path: path.name)
def test_the_sample_configs_load_and_match_their_sources(path: Path) -> None:
    config = load_config(path, env={})
    check_columns(config, read_source(config).schema)


def test_there_are_sample_configs_to_check() -> None:
    assert len(SAMPLE_CONFIGS) >= 4


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "sync.yaml"
    path.write_text(
        "name: t\nsource: {csv: x.csv}\ncontact:\n  email: Email\n  properties:\n"
        "    firstName: First\n    firstName: Given\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.path == "contact.properties.firstName"
    assert problem.line == 7
    assert "first at line 6" in problem.message
