"""The team's account: custom properties (created once, with a type) and mailing lists, and an
emulator started with a real account's properties and lists (`--properties`, `--lists`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from sync.emulator.account import AccountFileError, MailingList, load_lists, load_properties
from sync.emulator.cli import emulator_command
from sync.emulator.server import EmulatorHandle, running_emulator
from tests.emulator.test_emulator_cli import REPO_ROOT, _first_line

PROPERTIES = "/v1/contacts/properties"


def custom(client: httpx.Client) -> dict[str, str]:
    answer = client.get(PROPERTIES, params={"list": "custom"})
    assert answer.status_code == 200
    return {prop["key"]: prop["type"] for prop in answer.json()}


def create(client: httpx.Client, name: str, kind: str) -> httpx.Response:
    return client.post(PROPERTIES, json={"name": name, "type": kind})


# --- created once, with a type ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["string", "number", "boolean", "date"])
def test_a_property_is_created_once_with_its_type(api: httpx.Client, kind: str) -> None:
    assert create(api, "planName", kind).status_code == 200
    again = create(api, "planName", kind)
    assert again.status_code == 400
    assert again.json() == {"success": False, "message": "Property already exists."}
    other_type = create(api, "planName", "string" if kind != "string" else "number")
    assert other_type.status_code == 400
    assert custom(api) == {"planName": kind}  # the type it was created with stays


def test_a_created_property_is_listed_among_all_after_the_defaults(api: httpx.Client) -> None:
    create(api, "seats", "number")
    everything = api.get(PROPERTIES).json()
    keys = [prop["key"] for prop in everything]
    assert keys[-1] == "seats"
    assert {"email", "firstName", "lastName", "notes", "subscribed", "userId"} <= set(keys)
    assert {"key": "subscribed", "label": "Subscribed", "type": "boolean"} in everything


def test_values_must_fit_the_type_a_property_was_created_with(api: httpx.Client) -> None:
    create(api, "seats", "number")
    refused = api.put("/v1/contacts/update", json={"email": "a@example.com", "seats": "3"})
    assert refused.status_code == 400
    ok = api.put("/v1/contacts/update", json={"email": "a@example.com", "seats": 3})
    assert ok.status_code == 200


# --- started with an account ----------------------------------------------------------------


def test_an_emulator_started_with_properties_has_them_and_a_reset_keeps_them(
    make_client: Any,
) -> None:
    with running_emulator(properties={"plan": "string", "seats": "number"}) as emu:
        client = make_client(emu)
        assert custom(client) == {"plan": "string", "seats": "number"}
        assert create(client, "seats", "number").status_code == 400
        assert create(client, "company", "string").status_code == 200
        emu.reset()
        assert custom(client) == {"plan": "string", "seats": "number"}


@pytest.mark.parametrize(
    ("properties", "why"),
    [
        ({"teamId": "string"}, "reserved"),
        ({"plan": "text"}, "unknown type 'text'"),
        ({"firstName": "number"}, "default contact field"),
        ({"plan": "string", "Plan": "number"}, "given twice"),
    ],
)
def test_starting_properties_are_held_to_loops_rules(properties: dict[str, str], why: str) -> None:
    with pytest.raises(ValueError, match=why), running_emulator(properties=properties):
        pass


def test_with_a_database_the_starting_properties_fill_in_what_it_lacks(
    tmp_path: Path, make_client: Any
) -> None:
    db = tmp_path / "team.sqlite"
    with running_emulator(db=db) as emu:
        create(make_client(emu), "plan", "number")
    with running_emulator(db=db, properties={"plan": "string", "seats": "number"}) as emu:
        assert custom(make_client(emu)) == {"plan": "number", "seats": "number"}


def test_inspection_sets_up_properties_without_counting_requests(
    emu: EmulatorHandle, api: httpx.Client, inspect: httpx.Client
) -> None:
    assert emu.set_properties({"plan": "string"}) == {"plan": "string"}
    assert emu.set_properties({"plan": "number", "seats": "number"}) == {
        "plan": "number",  # a person can have a type changed in Loops; the API cannot
        "seats": "number",
    }
    assert emu.counters()["requests"] == 0
    refused = inspect.post("/_emulator/properties", json={"id": "string"})
    assert refused.status_code == 400
    assert "reserved" in refused.json()["message"]
    assert custom(api) == {"plan": "number", "seats": "number"}


# --- the files ------------------------------------------------------------------------------

LOOPS_PROPERTIES_ANSWER = [  # GET /v1/contacts/properties (list=all), as Loops documents it
    {"key": "firstName", "label": "First Name", "type": "string"},
    {"key": "email", "label": "Email", "type": "string"},
    {"key": "subscribed", "label": "Subscribed", "type": "boolean"},
    {"key": "favoriteColor", "label": "Favorite Color", "type": "string"},
    {"key": "plan", "label": "Plan", "type": "string"},
    {"key": "seats", "label": "Seats", "type": "number"},
]
LOOPS_LISTS_ANSWER = [
    {"id": "clxf1nxlb000008l3gmh2ab1c", "name": "Customers", "description": None},
    {
        "id": "clxf1nxlb000108l3hs9o2rwn",
        "name": "Trial",
        "description": "Day 1-14",
        "isPublic": False,
    },
]


def test_the_files_take_what_loops_answers(tmp_path: Path) -> None:
    properties = tmp_path / "properties.json"
    properties.write_text(json.dumps(LOOPS_PROPERTIES_ANSWER))
    assert load_properties(properties) == {
        "favoriteColor": "string",
        "plan": "string",
        "seats": "number",
    }
    shorthand = tmp_path / "short.json"
    shorthand.write_text('{"plan": "string", "signedUpAt": "date"}')
    assert load_properties(shorthand) == {"plan": "string", "signedUpAt": "date"}
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps(LOOPS_LISTS_ANSWER))
    assert load_lists(lists) == (
        MailingList("clxf1nxlb000008l3gmh2ab1c", "Customers", None, True),
        MailingList("clxf1nxlb000108l3hs9o2rwn", "Trial", "Day 1-14", False),
    )


@pytest.mark.parametrize(
    ("loader", "text", "message"),
    [
        (load_properties, "[{", "not valid JSON"),
        (load_properties, '"plan"', "give a list of {key, type} objects"),
        (load_properties, '[{"type": "string"}]', "property 1 has no 'key'"),
        (load_properties, '[{"key": "plan"}]', "property 1 ('plan') has no 'type'"),
        (load_properties, '{"plan": "integer"}', "property 1 ('plan'): unknown type 'integer'"),
        (load_properties, '{"subscribed": "string"}', "the name of a default contact field"),
        (load_lists, '{"id": "x"}', "give a list of {id, name} objects"),
        (load_lists, '[{"name": "Customers"}]', "list 1 has no 'id'"),
        (load_lists, '[{"id": "a", "name": "A"}, {"id": "a", "name": "B"}]', "given twice"),
        (load_lists, '[{"id": "a", "name": "A", "isPublic": "yes"}]', "'isPublic' must be"),
    ],
)
def test_a_bad_file_says_where(tmp_path: Path, loader: Any, text: str, message: str) -> None:
    path = tmp_path / "account.json"
    path.write_text(text)
    with pytest.raises(AccountFileError, match=str(path)) as caught:
        loader(path)
    assert message in str(caught.value)


def test_the_command_refuses_a_bad_file_as_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "lists.json"
    path.write_text('[{"name": "no id"}]')
    result = CliRunner().invoke(emulator_command, ["--lists", str(path)])
    assert result.exit_code == 2
    assert f"{path}: list 1 has no 'id'" in result.output


def test_the_command_serves_the_account_of_its_files(tmp_path: Path) -> None:
    properties, lists = tmp_path / "properties.json", tmp_path / "lists.json"
    properties.write_text(json.dumps(LOOPS_PROPERTIES_ANSWER))
    lists.write_text(json.dumps(LOOPS_LISTS_ANSWER))
    command = [sys.executable, "-m", "sync", "emulator", "--port", "0", "--api-key", "k"]
    command += ["--properties", str(properties), "--lists", str(lists)]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("LOOPS_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = _first_line(process.stdout, timeout=30).strip()
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer k"}) as client:
            assert custom(client) == {
                "favoriteColor": "string",
                "plan": "string",
                "seats": "number",
            }
            assert [item["id"] for item in client.get("/v1/lists").json()] == [
                "clxf1nxlb000008l3gmh2ab1c",
                "clxf1nxlb000108l3hs9o2rwn",
            ]
    finally:
        process.terminate()
        process.communicate(timeout=15)
