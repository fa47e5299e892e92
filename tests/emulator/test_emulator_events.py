"""events/send: validation, contact updates, and Idempotency-Key (409 within 24 hours)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sync.emulator.account import DEFAULT_LISTS
from sync.emulator.server import EmulatorHandle

NEWSLETTER = DEFAULT_LISTS[0].id
DAY = 24 * 60 * 60


def send(api: httpx.Client, key: str | None = None, **body: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api.post("/v1/events/send", json=body, headers=headers)


def test_event_creates_an_unknown_contact(emu: EmulatorHandle, api: httpx.Client) -> None:
    response = send(
        api,
        key="k1",
        email="ann@example.com",
        userId="u1",
        eventName="signup",
        eventProperties={"plan": "pro", "seats": 3, "trial": True},
        firstName="Ann",
        mailingLists={NEWSLETTER: True},
    )
    assert response.status_code == 200
    assert response.json() == {"success": True}
    [contact] = emu.contacts()
    assert contact["email"] == "ann@example.com"
    assert contact["userId"] == "u1"
    assert contact["firstName"] == "Ann"
    assert contact["subscribed"] is True
    assert contact["mailingLists"] == {NEWSLETTER: True}
    assert "plan" not in contact  # event properties belong to the event, not the contact
    [event] = emu.events()
    assert event == {
        "eventName": "signup",
        "email": "ann@example.com",
        "userId": "u1",
        "contactId": contact["id"],
        "eventProperties": {"plan": "pro", "seats": 3, "trial": True},
        "contactProperties": {"firstName": "Ann"},
        "mailingLists": {NEWSLETTER: True},
        "idempotencyKey": "k1",
        "received_at": event["received_at"],
    }
    assert isinstance(event["received_at"], float)


def test_event_updates_an_existing_contact(emu: EmulatorHandle, api: httpx.Client) -> None:
    api.put(
        "/v1/contacts/update",
        json={"email": "ann@example.com", "userId": "u1", "subscribed": False, "plan": "free"},
    )
    assert (
        send(api, userId="u1", eventName="upgrade", plan="pro", lastName="Lee").status_code == 200
    )
    [contact] = emu.contacts()
    assert contact["plan"] == "pro"
    assert contact["lastName"] == "Lee"
    assert contact["subscribed"] is False  # not re-subscribed by an event
    assert send(api, userId="u1", eventName="x", plan=None).status_code == 200
    assert "plan" not in emu.contacts()[0]


def test_user_id_alone_must_exist(emu: EmulatorHandle, api: httpx.Client) -> None:
    response = send(api, userId="ghost", eventName="signup")
    assert response.status_code == 400
    assert response.json() == {"success": False, "message": "Contact not found."}
    assert emu.events() == []
    assert emu.contacts() == []


@pytest.mark.parametrize(
    "body",
    [
        {"email": "ann@example.com"},
        {"email": "ann@example.com", "eventName": ""},
        {"email": "ann@example.com", "eventName": 3},
        {"eventName": "signup"},
        {"email": "nope", "eventName": "signup"},
        {"email": "ann@example.com", "eventName": "e", "eventProperties": {"a": {"b": 1}}},
        {"email": "ann@example.com", "eventName": "e", "eventProperties": {"a": [1, 2]}},
        {"email": "ann@example.com", "eventName": "e", "eventProperties": {"a": None}},
        {"email": "ann@example.com", "eventName": "e", "eventProperties": ["a"]},
        {"email": "ann@example.com", "eventName": "e", "teamId": "t"},
        {"email": "ann@example.com", "eventName": "e", "mailingLists": {NEWSLETTER: 1}},
        {"email": "ann@example.com", "eventName": "e", "plan": {"name": "pro"}},
        {"email": "ann@example.com", "eventName": "e" * 499},
    ],
)
def test_event_400s(emu: EmulatorHandle, api: httpx.Client, body: dict[str, Any]) -> None:
    response = send(api, key="k", **body)
    assert response.status_code == 400, response.text
    assert response.json()["success"] is False
    assert isinstance(response.json()["message"], str)
    assert emu.events() == []
    assert emu.contacts() == []
    # A refused request doesn't use up its idempotency key.
    assert send(api, key="k", email="ann@example.com", eventName="e").status_code == 200


def test_missing_event_name_message(api: httpx.Client) -> None:
    response = send(api, email="ann@example.com")
    assert response.json() == {"success": False, "message": "eventName is required."}


def test_idempotency_key_length(emu: EmulatorHandle, api: httpx.Client) -> None:
    too_long = send(api, key="k" * 101, email="ann@example.com", eventName="e")
    assert too_long.status_code == 400
    assert send(api, key="", email="ann@example.com", eventName="e").status_code == 400
    assert emu.events() == []
    assert send(api, key="k" * 100, email="ann@example.com", eventName="e").status_code == 200


def test_reused_key_is_409_and_changes_nothing(emu: EmulatorHandle, api: httpx.Client) -> None:
    assert send(api, key="k1", email="ann@example.com", eventName="e", plan="a").status_code == 200
    contacts, events = emu.contacts(), emu.events()
    again = send(api, key="k1", email="ann@example.com", eventName="e", plan="b")
    assert again.status_code == 409
    assert again.json()["success"] is False
    assert isinstance(again.json()["message"], str)
    # Even for another contact: keys are per team, not per contact.
    other = send(api, key="k1", email="bob@example.com", eventName="e")
    assert other.status_code == 409
    assert emu.contacts() == contacts
    assert emu.events() == events
    assert emu.counters()["409"] == 2
    assert send(api, key="k2", email="ann@example.com", eventName="e").status_code == 200
    assert send(api, email="ann@example.com", eventName="e").status_code == 200  # no key
    assert send(api, email="ann@example.com", eventName="e").status_code == 200
    assert len(emu.events()) == 4


def test_key_is_free_again_after_24_hours(emu: EmulatorHandle, api: httpx.Client) -> None:
    assert send(api, key="k1", email="ann@example.com", eventName="e").status_code == 200
    emu.advance_clock(DAY - 1)
    assert send(api, key="k1", email="ann@example.com", eventName="e").status_code == 409
    emu.advance_clock(1)
    assert send(api, key="k1", email="ann@example.com", eventName="e").status_code == 200
    # ...and used again from that moment.
    emu.advance_clock(DAY - 1)
    assert send(api, key="k1", email="ann@example.com", eventName="e").status_code == 409


def test_key_not_used_by_an_injected_failure(emu: EmulatorHandle, api: httpx.Client) -> None:
    emu.set_faults(fail_match="ann@example.com")
    assert send(api, key="k1", email="ann@example.com", eventName="e").status_code == 500
    emu.set_faults(fail_match=None)
    assert send(api, key="k1", email="ann@example.com", eventName="e").status_code == 200


def test_idempotency_key_only_matters_on_events(emu: EmulatorHandle, api: httpx.Client) -> None:
    headers = {"Idempotency-Key": "k1"}
    for _ in range(2):
        response = api.put("/v1/contacts/update", json={"email": "a@example.com"}, headers=headers)
        assert response.status_code == 200
    assert send(api, key="k1", email="ann@example.com", eventName="e").status_code == 200
