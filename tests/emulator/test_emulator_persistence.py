"""With `db`, the team's data (contacts, properties, events, idempotency keys) outlives a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sync.emulator.server import running_emulator


def test_state_survives_a_restart(tmp_path: Path, make_client: Any) -> None:
    db = tmp_path / "emulator.sqlite"
    with running_emulator(db=db) as emu:
        client = make_client(emu)
        contact_id = client.put(
            "/v1/contacts/update", json={"email": "ann@example.com", "userId": "u1", "plan": "pro"}
        ).json()["id"]
        client.put("/v1/contacts/update", json={"email": "cy@example.com"})
        client.put("/v1/contacts/update", json={"email": "ann@example.com", "lastName": "Lee"})
        client.post("/v1/contacts/properties", json={"name": "plan", "type": "string"})
        sent = client.post(
            "/v1/events/send",
            json={"email": "ann@example.com", "eventName": "signup"},
            headers={"Idempotency-Key": "k1"},
        )
        assert sent.status_code == 200
        contacts, events = emu.contacts(), emu.events()

    with running_emulator(db=str(db)) as emu:
        client = make_client(emu)
        assert emu.contacts() == contacts
        assert emu.events() == events
        found = client.get("/v1/contacts/find", params={"userId": "u1"}).json()
        assert [contact["id"] for contact in found] == [contact_id]
        custom = client.get("/v1/contacts/properties", params={"list": "custom"}).json()
        assert [prop["key"] for prop in custom] == ["plan"]
        again = client.post(
            "/v1/events/send",
            json={"email": "ann@example.com", "eventName": "signup"},
            headers={"Idempotency-Key": "k1"},
        )
        assert again.status_code == 409
        # Observations are per run.
        assert emu.counters()["requests"] == 3
        # Changes and deletions are written through too.
        client.put("/v1/contacts/update", json={"email": "new@example.com", "userId": "u1"})
        client.put("/v1/contacts/update", json={"email": "bob@example.com"})
        client.post("/v1/contacts/delete", json={"email": "bob@example.com"})

    with running_emulator(db=db) as emu:
        assert [contact["email"] for contact in emu.contacts()] == [
            "new@example.com",
            "cy@example.com",
        ]
        client = make_client(emu)
        assert client.get("/v1/contacts/find", params={"email": "ann@example.com"}).json() == []
        emu.reset()  # reset empties the file too

    with running_emulator(db=db) as emu:
        assert emu.contacts() == []
        assert emu.events() == []


def test_memory_is_the_default(make_client: Any) -> None:
    with running_emulator() as emu:
        make_client(emu).put("/v1/contacts/update", json={"email": "ann@example.com"})
    with running_emulator() as emu:
        assert emu.contacts() == []
