"""Contacts: upsert, create, find, delete, custom properties, mailing lists, and the 400s."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.emulator.account import DEFAULT_LISTS, MailingList
from sync.emulator.server import EmulatorHandle, running_emulator

NEWSLETTER = DEFAULT_LISTS[0].id
UPDATES = DEFAULT_LISTS[1].id


def upsert(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.put("/v1/contacts/update", json=body)


def find(api: httpx.Client, **query: str) -> list[dict[str, Any]]:
    response = api.get("/v1/contacts/find", params=query)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def only_contact(emu: EmulatorHandle) -> dict[str, Any]:
    contacts = emu.contacts()
    assert len(contacts) == 1, contacts
    return contacts[0]


# --- upsert ---------------------------------------------------------------------------------


def test_upsert_creates_a_subscribed_contact(emu: EmulatorHandle, api: httpx.Client) -> None:
    response = upsert(api, email="ann@example.com", firstName="Ann", plan="pro")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    contact = only_contact(emu)
    assert contact["id"] == body["id"]
    assert contact["email"] == "ann@example.com"
    assert contact["firstName"] == "Ann"
    assert contact["lastName"] is None
    assert contact["subscribed"] is True
    assert contact["source"] == "API"
    assert contact["userId"] is None
    assert contact["mailingLists"] == {}
    assert contact["plan"] == "pro"  # unknown properties are kept, not refused
    assert find(api, email="ann@example.com") == [contact]


def test_upsert_updates_without_touching_subscribed(emu: EmulatorHandle, api: httpx.Client) -> None:
    first = upsert(api, email="ann@example.com", subscribed=False).json()["id"]
    second = upsert(api, email="ann@example.com", firstName="Ann").json()["id"]
    assert first == second
    contact = only_contact(emu)
    assert contact["subscribed"] is False
    assert contact["firstName"] == "Ann"
    upsert(api, email="ann@example.com", subscribed=True)
    assert only_contact(emu)["subscribed"] is True


def test_match_by_email_sets_user_id(emu: EmulatorHandle, api: httpx.Client) -> None:
    upsert(api, email="ann@example.com")
    upsert(api, email="ann@example.com", userId="u1")
    assert only_contact(emu)["userId"] == "u1"


def test_match_by_user_id_changes_the_email(emu: EmulatorHandle, api: httpx.Client) -> None:
    contact_id = upsert(api, email="old@example.com", userId="u1").json()["id"]
    assert upsert(api, email="new@example.com", userId="u1").json()["id"] == contact_id
    contact = only_contact(emu)
    assert contact["email"] == "new@example.com"
    assert find(api, email="old@example.com") == []
    assert find(api, email="new@example.com")[0]["id"] == contact_id


def test_contacts_keep_their_creation_order(emu: EmulatorHandle, api: httpx.Client) -> None:
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        upsert(api, email=email)
    upsert(api, email="a@example.com", firstName="A")
    assert [c["email"] for c in emu.contacts()] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]


def test_update_by_user_id_alone(emu: EmulatorHandle, api: httpx.Client) -> None:
    upsert(api, email="ann@example.com", userId="u1")
    assert upsert(api, userId="u1", lastName="Lee").status_code == 200
    assert only_contact(emu)["lastName"] == "Lee"


def test_no_match_creates_with_both_identifiers(emu: EmulatorHandle, api: httpx.Client) -> None:
    upsert(api, email="ann@example.com", userId="u1")
    upsert(api, email="bob@example.com", userId="u2")
    by_email = {contact["email"]: contact for contact in emu.contacts()}
    assert by_email["bob@example.com"]["userId"] == "u2"
    assert len(by_email) == 2


def test_user_id_alone_cannot_create(emu: EmulatorHandle, api: httpx.Client) -> None:
    """Choice: creating a contact needs an email (Loops answers 'Contact not found.')."""
    response = upsert(api, userId="nobody")
    assert response.status_code == 400
    assert response.json() == {"success": False, "message": "Contact not found."}
    assert emu.contacts() == []


def test_identifiers_of_two_contacts_are_refused(emu: EmulatorHandle, api: httpx.Client) -> None:
    upsert(api, email="ann@example.com", userId="u1")
    upsert(api, email="bob@example.com", userId="u2")
    before = emu.contacts()
    response = upsert(api, email="ann@example.com", userId="u2", firstName="X")
    assert response.status_code == 400
    assert emu.contacts() == before


def test_emails_match_case_insensitively(emu: EmulatorHandle, api: httpx.Client) -> None:
    """Choice: Ann@Example.com and ann@example.com are one contact (stricter for clients)."""
    first = upsert(api, email="Ann@Example.com").json()["id"]
    assert upsert(api, email="ann@example.com", firstName="Ann").json()["id"] == first
    assert only_contact(emu)["email"] == "ann@example.com"  # the latest spelling is kept
    assert find(api, email="ANN@EXAMPLE.COM")[0]["id"] == first


def test_null_clears_a_property(emu: EmulatorHandle, api: httpx.Client) -> None:
    upsert(api, email="ann@example.com", firstName="Ann", plan="pro", seats=3)
    upsert(api, email="ann@example.com", firstName=None, plan=None)
    contact = only_contact(emu)
    assert contact["firstName"] is None
    assert "plan" not in contact
    assert contact["seats"] == 3


def test_mailing_lists_are_merged(emu: EmulatorHandle, api: httpx.Client) -> None:
    upsert(api, email="ann@example.com", mailingLists={NEWSLETTER: True})
    upsert(api, email="ann@example.com", mailingLists={UPDATES: True})
    assert only_contact(emu)["mailingLists"] == {NEWSLETTER: True, UPDATES: True}
    upsert(api, email="ann@example.com", mailingLists={NEWSLETTER: False})
    assert only_contact(emu)["mailingLists"] == {UPDATES: True}
    upsert(api, email="ann@example.com", firstName="Ann")  # lists left alone when not sent
    assert only_contact(emu)["mailingLists"] == {UPDATES: True}


def test_typed_custom_property_values_are_checked(emu: EmulatorHandle, api: httpx.Client) -> None:
    for name, kind in [("seats", "number"), ("vip", "boolean"), ("renewsAt", "date")]:
        created = api.post("/v1/contacts/properties", json={"name": name, "type": kind})
        assert created.status_code == 200
    good = {"seats": 3.5, "vip": False, "renewsAt": "2025-01-31T10:00:00.123+02:00"}
    assert upsert(api, email="ann@example.com", **good).status_code == 200
    for date in ["2025-01-31", "2025-01-31T10:00", 1735689600000, "1735689600000"]:
        assert upsert(api, email="ann@example.com", renewsAt=date).status_code == 200
    bad: list[dict[str, Any]] = [
        {"seats": "3"},
        {"seats": True},
        {"vip": "yes"},
        {"renewsAt": "2025-02-30"},
        {"renewsAt": "2025-01-31T10:00:00Z"},  # "Z" isn't a documented offset (stricter)
        {"renewsAt": "31/01/2025"},
        {"firstName": 3},
    ]
    for body in bad:
        response = upsert(api, email="ann@example.com", **body)
        assert response.status_code == 400, body
    assert only_contact(emu)["seats"] == 3.5


# --- the 400s -------------------------------------------------------------------------------

LONGEST_ASCII = "x" * 498  # json.dumps adds 2 quotes: exactly 500


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"firstName": "Ann"}, None),
        ({"email": None, "userId": None}, None),
        ({"email": "ann"}, "Invalid email address."),
        ({"email": "ann@example"}, "Invalid email address."),
        ({"email": "@example.com"}, "Invalid email address."),
        ({"email": "ann@@example.com"}, "Invalid email address."),
        ({"email": "ann@ex ample.com"}, "Invalid email address."),
        ({"email": " ann@example.com"}, "Invalid email address."),
        ({"email": "ann@example..com"}, "Invalid email address."),
        ({"email": "ann@example.com."}, "Invalid email address."),
        ({"email": 42}, "Invalid email address."),
        ({"email": "ann@example.com", "id": "x"}, None),
        ({"email": "ann@example.com", "listId": "x"}, None),
        ({"email": "ann@example.com", "softDeleteAt": 1}, None),
        ({"email": "ann@example.com", "teamId": "x"}, None),
        ({"email": "ann@example.com", "updatedAt": 1}, None),
        (
            {"email": "ann@example.com", "firstName": LONGEST_ASCII + "x"},
            "Some body key or value is longer than allowable",
        ),
        (
            {"email": "ann@example.com", "k" * 499: "v"},
            "Some body key or value is longer than allowable",
        ),
        ({"email": "ann@example.com", "mailingLists": {NEWSLETTER: "true"}}, None),
        ({"email": "ann@example.com", "mailingLists": [NEWSLETTER]}, None),
        ({"email": "ann@example.com", "mailingLists": {"cnotalist000000000000000": True}}, None),
        ({"email": "ann@example.com", "subscribed": "yes"}, None),
        ({"email": "ann@example.com", "subscribed": None}, None),
        ({"email": "ann@example.com", "plan": {"name": "pro"}}, None),
        ({"email": "ann@example.com", "tags": ["a", "b"]}, None),
        ({"email": "ann@example.com", "optInStatus": "accepted"}, None),
        ({"userId": ""}, None),
        ({"userId": 42}, None),
    ],
)
def test_update_400s(
    emu: EmulatorHandle, api: httpx.Client, body: dict[str, Any], message: str | None
) -> None:
    response = upsert(api, **body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["success"] is False
    assert isinstance(answer["message"], str)
    if message is not None:
        assert answer["message"] == message
    assert emu.contacts() == []


@pytest.mark.parametrize("content", [b"", b"not json", b"[1, 2]", b'"text"', b"null", b"{"])
def test_body_must_be_a_json_object(emu: EmulatorHandle, api: httpx.Client, content: bytes) -> None:
    for method, path in [("PUT", "/v1/contacts/update"), ("POST", "/v1/events/send")]:
        response = api.request(
            method, path, content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["success"] is False
    assert emu.contacts() == []


def test_length_limit_counts_json_quotes(emu: EmulatorHandle, api: httpx.Client) -> None:
    assert len(json.dumps(LONGEST_ASCII)) == 500
    assert upsert(api, email="ann@example.com", firstName=LONGEST_ASCII).status_code == 200
    # Counted as JavaScript's JSON.stringify(value).length: é is one, an emoji two, \n two.
    assert upsert(api, email="ann@example.com", lastName="é" * 498).status_code == 200
    assert upsert(api, email="ann@example.com", lastName="é" * 499).status_code == 400
    assert upsert(api, email="ann@example.com", lastName="😀" * 249).status_code == 200
    assert upsert(api, email="ann@example.com", lastName="😀" * 250).status_code == 400
    assert upsert(api, email="ann@example.com", lastName="\n" * 249).status_code == 200
    assert upsert(api, email="ann@example.com", lastName="\n" * 250).status_code == 400
    # Nested values too.
    response = api.post(
        "/v1/events/send",
        json={"email": "ann@example.com", "eventName": "e", "eventProperties": {"p": "x" * 499}},
    )
    assert response.status_code == 400
    assert response.json()["message"] == "Some body key or value is longer than allowable"


def _javascript_json_length(value: str) -> int:
    """`JSON.stringify(value).length`: UTF-16 code units, non-ASCII not escaped."""
    return len(json.dumps(value, ensure_ascii=False).encode("utf-16-le")) // 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.text(min_size=240, max_size=520))
def test_length_limit_property(
    shared_emu: EmulatorHandle, shared_api: httpx.Client, value: str
) -> None:
    shared_emu.reset()  # no leftover faults from another test
    response = upsert(shared_api, email="prop@example.com", notes=value)
    expected = 200 if _javascript_json_length(value) <= 500 else 400
    assert response.status_code == expected


# --- create ---------------------------------------------------------------------------------


def test_create(emu: EmulatorHandle, api: httpx.Client) -> None:
    response = api.post(
        "/v1/contacts/create",
        json={"email": "ann@example.com", "userId": "u1", "mailingLists": {NEWSLETTER: True}},
    )
    assert response.status_code == 200
    contact = only_contact(emu)
    assert contact["id"] == response.json()["id"]
    assert contact["subscribed"] is True
    assert contact["mailingLists"] == {NEWSLETTER: True}


@pytest.mark.parametrize(
    "body",
    [
        {"email": "ann@example.com"},
        {"email": "ANN@example.com"},
        {"email": "other@example.com", "userId": "u1"},
    ],
)
def test_create_existing_is_409(emu: EmulatorHandle, api: httpx.Client, body: Any) -> None:
    api.post("/v1/contacts/create", json={"email": "ann@example.com", "userId": "u1"})
    before = emu.contacts()
    response = api.post("/v1/contacts/create", json={**body, "firstName": "Changed"})
    assert response.status_code == 409
    assert response.json()["success"] is False
    assert emu.contacts() == before


def test_create_needs_an_email(emu: EmulatorHandle, api: httpx.Client) -> None:
    assert api.post("/v1/contacts/create", json={"userId": "u1"}).status_code == 400
    assert api.post("/v1/contacts/create", json={"email": "nope"}).status_code == 400
    assert emu.contacts() == []


# --- find -----------------------------------------------------------------------------------


def test_find(api: httpx.Client) -> None:
    contact_id = upsert(api, email="a+tag@example.com", userId="u 1/2").json()["id"]
    assert find(api, email="a+tag@example.com")[0]["id"] == contact_id  # "+" survives encoding
    assert find(api, userId="u 1/2")[0]["id"] == contact_id
    assert find(api, email="nobody@example.com") == []
    assert find(api, userId="nobody") == []


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?email=a@example.com&userId=u1",
        "?email=not-an-email",
        "?userId=",
        "?email=a@example.com&email=b@example.com",
    ],
)
def test_find_400s(api: httpx.Client, query: str) -> None:
    response = api.get("/v1/contacts/find" + query)
    assert response.status_code == 400
    assert response.json()["success"] is False


# --- delete ---------------------------------------------------------------------------------


def test_delete(emu: EmulatorHandle, api: httpx.Client) -> None:
    upsert(api, email="ann@example.com", userId="u1")
    upsert(api, email="bob@example.com", userId="u2")
    response = api.post("/v1/contacts/delete", json={"email": "ANN@example.com"})
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Contact deleted."}
    assert api.post("/v1/contacts/delete", json={"userId": "u2"}).status_code == 200
    assert emu.contacts() == []
    # The identifiers are free again.
    assert api.post("/v1/contacts/create", json={"email": "ann@example.com"}).status_code == 200


def test_delete_errors(emu: EmulatorHandle, api: httpx.Client) -> None:
    upsert(api, email="ann@example.com", userId="u1")
    missing = api.post("/v1/contacts/delete", json={"email": "nobody@example.com"})
    assert missing.status_code == 404
    assert missing.json()["success"] is False
    both = api.post("/v1/contacts/delete", json={"email": "ann@example.com", "userId": "u1"})
    assert both.status_code == 400
    assert api.post("/v1/contacts/delete", json={}).status_code == 400
    assert api.post("/v1/contacts/delete", json={"email": "bad"}).status_code == 400
    assert len(emu.contacts()) == 1


# --- properties -----------------------------------------------------------------------------


def test_properties(api: httpx.Client) -> None:
    assert api.get("/v1/contacts/properties", params={"list": "custom"}).json() == []
    defaults = api.get("/v1/contacts/properties").json()
    assert {prop["key"] for prop in defaults} >= {"email", "firstName", "userId", "subscribed"}
    created = api.post("/v1/contacts/properties", json={"name": "planName", "type": "string"})
    assert created.status_code == 200
    assert created.json() == {"success": True}
    custom = api.get("/v1/contacts/properties", params={"list": "custom"}).json()
    assert custom == [{"key": "planName", "label": "Plan name", "type": "string"}]
    everything = api.get("/v1/contacts/properties", params={"list": "all"}).json()
    assert everything == [*defaults, *custom]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Plan name", "type": "string"},
        {"name": "plan_name", "type": "string"},
        {"name": "PlanName", "type": "string"},
        {"name": "", "type": "string"},
        {"name": 3, "type": "string"},
        {"type": "string"},
        {"name": "teamId", "type": "string"},
        {"name": "updatedat", "type": "string"},
        {"name": "firstName", "type": "string"},
        {"name": "planName", "type": "text"},
        {"name": "planName"},
        {"name": "existing", "type": "number"},
        {"name": "EXISTING", "type": "number"},
    ],
)
def test_property_create_400s(api: httpx.Client, body: dict[str, Any]) -> None:
    api.post("/v1/contacts/properties", json={"name": "existing", "type": "string"})
    response = api.post("/v1/contacts/properties", json=body)
    assert response.status_code == 400
    assert response.json()["success"] is False
    custom = api.get("/v1/contacts/properties", params={"list": "custom"}).json()
    assert [prop["key"] for prop in custom] == ["existing"]


def test_property_list_parameter_is_checked(api: httpx.Client) -> None:
    assert api.get("/v1/contacts/properties", params={"list": "some"}).status_code == 400


# --- lists ----------------------------------------------------------------------------------


def test_lists(api: httpx.Client) -> None:
    response = api.get("/v1/lists")
    assert response.status_code == 200
    assert response.json() == [mailing_list.as_json() for mailing_list in DEFAULT_LISTS]
    assert response.json()[0] == {
        "id": "cm06f5v0e45nf0ml5754o9cix",
        "name": "Newsletter",
        "description": "Monthly news and tips",
        "isPublic": True,
    }


def test_lists_are_configurable(make_client: Any) -> None:
    only = MailingList("cmcustomlist0000000000000", "Customers", None, False)
    with running_emulator(lists=[only]) as emu:
        client = make_client(emu)
        assert client.get("/v1/lists").json() == [
            {"id": only.id, "name": "Customers", "description": None, "isPublic": False}
        ]
        ok = upsert(client, email="a@example.com", mailingLists={only.id: True})
        assert ok.status_code == 200
        assert (
            upsert(client, email="a@example.com", mailingLists={NEWSLETTER: True}).status_code
            == 400
        )


# --- routing --------------------------------------------------------------------------------


def test_unknown_path_and_wrong_method(api: httpx.Client) -> None:
    missing = api.get("/v1/contacts/nowhere")
    assert missing.status_code == 404
    assert missing.json()["success"] is False
    wrong = api.post("/v1/contacts/update", json={"email": "a@example.com"})
    assert wrong.status_code == 405
    assert wrong.json() == {"success": False, "message": "Wrong HTTP request method."}
