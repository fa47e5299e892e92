"""Every answer the emulator gives, checked against the response schemas of Loops' OpenAPI spec.

The spec is read from the shared folder beside the repository (never copied into it). Each
case makes a request on a prepared emulator and validates the JSON answer against the schema
the spec gives for that path, method and status, `$ref`s resolved into components/schemas.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from sync.emulator.account import DEFAULT_LISTS
from sync.emulator.server import EmulatorHandle

SPEC_PATH = Path(__file__).resolve().parents[2] / ".." / "shared" / "loops-openapi.yaml"
SPEC_URI = "urn:loops-openapi"
ENDPOINTS = [
    ("/v1/api-key", "get"),
    ("/v1/contacts/update", "put"),
    ("/v1/contacts/create", "post"),
    ("/v1/contacts/find", "get"),
    ("/v1/contacts/delete", "post"),
    ("/v1/contacts/properties", "get"),
    ("/v1/contacts/properties", "post"),
    ("/v1/lists", "get"),
    ("/v1/events/send", "post"),
]
SEEDED = {"email": "seeded@example.com", "userId": "u-seeded"}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


CASES = [
    Case("api key", "GET", "/v1/api-key", 200),
    Case("bad api key", "GET", "/v1/api-key", 401, headers={"Authorization": "Bearer nope"}),
    Case(
        "update",
        "PUT",
        "/v1/contacts/update",
        200,
        json={
            "email": "new@example.com",
            "firstName": "N",
            "mailingLists": {DEFAULT_LISTS[0].id: True},
        },
    ),
    Case("update bad", "PUT", "/v1/contacts/update", 400, json={"firstName": "N"}),
    Case("create", "POST", "/v1/contacts/create", 200, json={"email": "new@example.com"}),
    Case("create bad", "POST", "/v1/contacts/create", 400, json={"email": "nope"}),
    Case("create taken", "POST", "/v1/contacts/create", 409, json={"email": SEEDED["email"]}),
    Case("find", "GET", "/v1/contacts/find", 200, params={"email": SEEDED["email"]}),
    Case("find by userId", "GET", "/v1/contacts/find", 200, params={"userId": "u-seeded"}),
    Case("find none", "GET", "/v1/contacts/find", 200, params={"email": "none@example.com"}),
    Case("find bad", "GET", "/v1/contacts/find", 400, params={"email": "nope"}),
    Case("delete", "POST", "/v1/contacts/delete", 200, json={"email": SEEDED["email"]}),
    Case("delete bad", "POST", "/v1/contacts/delete", 400, json=SEEDED),
    Case("delete missing", "POST", "/v1/contacts/delete", 404, json={"userId": "nobody"}),
    Case("properties", "GET", "/v1/contacts/properties", 200),
    Case("custom props", "GET", "/v1/contacts/properties", 200, params={"list": "custom"}),
    Case(
        "new property",
        "POST",
        "/v1/contacts/properties",
        200,
        json={"name": "planName", "type": "string"},
    ),
    Case(
        "bad property",
        "POST",
        "/v1/contacts/properties",
        400,
        json={"name": "plan", "type": "string"},
    ),
    Case("lists", "GET", "/v1/lists", 200),
    Case(
        "event",
        "POST",
        "/v1/events/send",
        200,
        json={"email": "new@example.com", "eventName": "signup"},
        headers={"Idempotency-Key": "fresh"},
    ),
    Case("event bad", "POST", "/v1/events/send", 400, json={"email": "new@example.com"}),
    Case(
        "event replay",
        "POST",
        "/v1/events/send",
        409,
        json={"email": "new@example.com", "eventName": "signup"},
        headers={"Idempotency-Key": "used"},
    ),
]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not SPEC_PATH.exists():
        reason = f"the Loops OpenAPI spec is missing: expected it at {SPEC_PATH.resolve()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    # The C loader when PyYAML has it: the spec is large and the pure-Python one takes ~1 s.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loaded: dict[str, Any] = yaml.load(SPEC_PATH.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    return loaded


@pytest.fixture(scope="module")
def response_validator(spec: dict[str, Any]) -> Callable[[str, str, int], Any]:
    """`validator(path, method, status)`: a jsonschema validator, or None if no schema."""
    registry: Registry[Any] = Registry().with_resource(
        SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
    )

    def validator(path: str, method: str, status: int) -> Any:
        response = spec["paths"][path][method]["responses"].get(str(status))
        if response is None or "content" not in response:
            return None
        pointer = "/".join(
            part.replace("~", "~0").replace("/", "~1")
            for part in ("paths", path, method, "responses", str(status), "content")
        )
        ref = f"{SPEC_URI}#/{pointer}/application~1json/schema"
        return jsonschema.Draft202012Validator({"$ref": ref}, registry=registry)

    return validator


@pytest.fixture
def prepared(emu: EmulatorHandle, api: httpx.Client) -> EmulatorHandle:
    """A team with one contact, one custom property and one used idempotency key."""
    assert api.put("/v1/contacts/update", json={**SEEDED, "plan": "pro"}).status_code == 200
    assert (
        api.post("/v1/contacts/properties", json={"name": "plan", "type": "string"}).status_code
        == 200
    )
    used = api.post(
        "/v1/events/send",
        json={**SEEDED, "eventName": "seeded"},
        headers={"Idempotency-Key": "used"},
    )
    assert used.status_code == 200
    return emu


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_answer_matches_the_spec(
    prepared: EmulatorHandle,
    make_client: Any,
    response_validator: Callable[[str, str, int], Any],
    case: Case,
) -> None:
    client = make_client(prepared, headers={**prepared.auth_headers, **case.headers})
    response = client.request(case.method, case.path, json=case.json, params=case.params)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/json"
    validator = response_validator(case.path, case.method.lower(), case.status)
    assert validator is not None, f"the spec has no schema for {case.name}"
    validator.validate(response.json())


def test_find_answers_are_not_trivially_empty(prepared: EmulatorHandle, api: httpx.Client) -> None:
    """The find case above validates a real Contact, custom properties included."""
    [contact] = api.get("/v1/contacts/find", params={"email": SEEDED["email"]}).json()
    assert contact["plan"] == "pro"


def test_every_documented_answer_is_covered(spec: dict[str, Any]) -> None:
    """Each status with a JSON schema on these endpoints has at least one case above."""
    covered = {(case.path, case.method.lower(), case.status) for case in CASES}
    for path, method in ENDPOINTS:
        for status, response in spec["paths"][path][method]["responses"].items():
            if "content" in response:
                assert (path, method, int(status)) in covered, (path, method, status)


def test_the_validator_does_reject(response_validator: Callable[[str, str, int], Any]) -> None:
    """A guard on the harness itself: wrong shapes must fail validation."""
    wrong = [
        ("/v1/contacts/update", "put", 200, {"success": True}),
        ("/v1/contacts/find", "get", 200, [{"id": 3}]),
        ("/v1/lists", "get", 200, [{"id": "x", "name": "n", "isPublic": True}]),
        ("/v1/events/send", "post", 409, {"success": False}),
    ]
    for path, method, status, payload in wrong:
        with pytest.raises(jsonschema.ValidationError):
            response_validator(path, method, status).validate(payload)
