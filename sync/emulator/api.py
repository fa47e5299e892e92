"""The Loops API v1 endpoints, as plain functions of the state and a parsed request.

No HTTP here (auth, rate limits and faults are the app's business), so the rules of the API are
in one place and can be read top to bottom. Every endpoint validates the whole request before it
changes anything: an answer other than 200 never leaves a trace in the state.

Where the Loops docs are silent, the stricter reading is taken (a client that works against the
emulator should work against Loops) and a comment says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sync.emulator.account import (
    DEFAULT_PROPERTIES,
    READ_ONLY_FIELDS,
    MailingList,
    is_reserved,
    new_property_problem,
    property_label,
)
from sync.emulator.state import (
    Contact,
    EmulatorState,
    JsonObject,
    new_contact_id,
    render_contact,
)
from sync.emulator.values import fits_type, is_scalar, is_valid_email
from sync.emulator.values import too_long as _too_long

TOO_LONG_MESSAGE = "Some body key or value is longer than allowable"
MAX_IDEMPOTENCY_KEY_CHARS = 100


@dataclass(frozen=True)
class ApiRequest:
    """An authenticated, rate-limit-approved request, path relative to `/api`."""

    method: str
    path: str
    query: Mapping[str, Sequence[str]]
    body: bytes
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Answer:
    status: int
    payload: Any


def failure(status: int, message: str) -> Answer:
    """Loops' error shape: `{"success": false, "message": ...}`."""
    return Answer(status, {"success": False, "message": message})


class ApiError(Exception):
    """Stops a request with a Loops-style error answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- validation helpers ---------------------------------------------------------------------


def _check_lengths(value: object) -> None:
    """Every key and string value, at any depth, fits in 500 characters."""
    if isinstance(value, dict):
        for key, item in value.items():
            if _too_long(key):
                raise ApiError(400, TOO_LONG_MESSAGE)
            _check_lengths(item)
    elif isinstance(value, list):
        for item in value:
            _check_lengths(item)
    elif isinstance(value, str) and _too_long(value):
        raise ApiError(400, TOO_LONG_MESSAGE)


def _json_object(body: bytes) -> JsonObject:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "The request body must be a JSON object.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    _check_lengths(data)
    return data


def _check_email(email: object) -> str:
    if not isinstance(email, str) or not is_valid_email(email):
        raise ApiError(400, "Invalid email address.")
    return email


def _check_user_id(user_id: object) -> str:
    # The spec types userId as a string; a number or an empty string is refused (stricter).
    if not isinstance(user_id, str) or not user_id:
        raise ApiError(400, "Invalid userId: it must be a non-empty string.")
    return user_id


def _identity(body: JsonObject) -> tuple[str | None, str | None]:
    """The (email, userId) of a body; at least one is required. `null` counts as absent."""
    email = body.get("email")
    user_id = body.get("userId")
    if email is None and user_id is None:
        raise ApiError(400, "An email or a userId is required.")
    return (
        None if email is None else _check_email(email),
        None if user_id is None else _check_user_id(user_id),
    )


def _exactly_one_identity(email: object, user_id: object) -> tuple[str | None, str | None]:
    if (email is None) == (user_id is None):
        raise ApiError(400, "Provide exactly one of email or userId.")
    return (
        None if email is None else _check_email(email),
        None if user_id is None else _check_user_id(user_id),
    )


def _apply(contact: Contact, changes: JsonObject, lists: Mapping[str, bool]) -> None:
    """Set the changed properties (null removes one) and merge the mailing lists."""
    for key, value in changes.items():
        if value is None:
            contact.pop(key, None)
        else:
            contact[key] = value
    memberships = contact.setdefault("mailingLists", {})
    for list_id, subscribed in lists.items():
        if subscribed:
            memberships[list_id] = True
        else:
            memberships.pop(list_id, None)


# --- the endpoints --------------------------------------------------------------------------

Handler = Callable[[ApiRequest], Answer]


class LoopsApi:
    """Answers `/v1/...` requests against an `EmulatorState`."""

    def __init__(
        self, state: EmulatorState, *, lists: Sequence[MailingList], team_name: str
    ) -> None:
        self._state = state
        self._lists = tuple(lists)
        self._list_ids = frozenset(mailing_list.id for mailing_list in self._lists)
        self._team_name = team_name
        self._routes: dict[str, dict[str, Handler]] = {
            "/v1/api-key": {"GET": self._api_key},
            "/v1/contacts/update": {"PUT": self._update_contact},
            "/v1/contacts/create": {"POST": self._create_contact},
            "/v1/contacts/find": {"GET": self._find_contact},
            "/v1/contacts/delete": {"POST": self._delete_contact},
            "/v1/contacts/properties": {
                "GET": self._list_properties,
                "POST": self._create_property,
            },
            "/v1/lists": {"GET": self._mailing_lists},
            "/v1/events/send": {"POST": self._send_event},
        }

    def answer(self, request: ApiRequest) -> Answer:
        methods = self._routes.get(request.path)
        if methods is None:
            return failure(404, "Not found.")
        handler = methods.get(request.method)
        if handler is None:
            return failure(405, "Wrong HTTP request method.")
        try:
            return handler(request)
        except ApiError as error:
            return failure(error.status, error.message)

    # --- shared pieces ----------------------------------------------------------------------

    def _contact_changes(self, body: JsonObject, skip: frozenset[str]) -> JsonObject:
        """The contact properties a body sets, each checked against its known type."""
        custom = self._state.custom_properties()
        changes: JsonObject = {}
        for key, value in body.items():
            if key in skip:
                continue
            if is_reserved(key):
                raise ApiError(400, f"'{key}' is a reserved name and can't be a contact property.")
            if key in READ_ONLY_FIELDS:
                raise ApiError(400, f"'{key}' can't be set through the API.")
            if value is None:
                if key == "subscribed":
                    raise ApiError(400, "subscribed must be true or false.")
                changes[key] = None
                continue
            kind = DEFAULT_PROPERTIES[key][1] if key in DEFAULT_PROPERTIES else custom.get(key)
            if not fits_type(value, kind):
                expected = kind or "a string, number or boolean"
                raise ApiError(400, f"Invalid value for contact property '{key}' ({expected}).")
            changes[key] = value
        return changes

    def _lists_in(self, body: JsonObject) -> dict[str, bool]:
        if "mailingLists" not in body:
            return {}
        value = body["mailingLists"]
        if not isinstance(value, dict):
            raise ApiError(400, "mailingLists must be an object of mailing list IDs and booleans.")
        for list_id, subscribed in value.items():
            if not isinstance(subscribed, bool):
                raise ApiError(400, f"mailingLists['{list_id}'] must be true or false.")
            # Unknown list ids are refused (stricter reading; catches a mistyped id early).
            if list_id not in self._list_ids:
                raise ApiError(400, f"Mailing list '{list_id}' does not exist.")
        return dict(value)

    def _lookup(self, email: str | None, user_id: str | None) -> Contact | None:
        """The contact with this email, else with this userId (a copy), or None."""
        if email is not None:
            return self._state.contact_by_email(email)
        if user_id is not None:
            return self._state.contact_by_user_id(user_id)
        return None

    def _target(self, email: str | None, user_id: str | None) -> Contact:
        """The contact a request acts on: a copy of the one matching, or a new one (unsaved).

        As documented: a contact matching the email or the userId is the one, and the other
        identifier is set on it; the userId is looked up first so that sending a userId with a
        new email changes that contact's email. When the two identifiers match two different
        contacts the docs are silent: that is refused rather than guessed.
        """
        by_user_id = self._state.contact_by_user_id(user_id) if user_id else None
        by_email = self._state.contact_by_email(email) if email else None
        if by_user_id and by_email and by_user_id["id"] != by_email["id"]:
            raise ApiError(400, "The email and the userId belong to two different contacts.")
        contact = by_user_id or by_email
        if contact is None:
            # Creating a contact needs an email (Loops: a userId "must already have been added to
            # your contact"); a userId alone that matches nobody is refused.
            if email is None:
                raise ApiError(400, "Contact not found.")
            contact = {
                "id": new_contact_id(),
                "email": email,
                "source": "API",
                "subscribed": True,  # new contacts are subscribed by default, and only they
                "mailingLists": {},
            }
        if email is not None:
            contact["email"] = email
        if user_id is not None:
            contact["userId"] = user_id
        return contact

    # --- endpoints --------------------------------------------------------------------------

    def _api_key(self, _request: ApiRequest) -> Answer:
        return Answer(200, {"success": True, "teamName": self._team_name})

    def _update_contact(self, request: ApiRequest) -> Answer:
        body = _json_object(request.body)
        email, user_id = _identity(body)
        changes = self._contact_changes(body, frozenset({"email", "userId", "mailingLists"}))
        lists = self._lists_in(body)
        contact = self._target(email, user_id)
        _apply(contact, changes, lists)
        self._state.save_contact(contact)
        return Answer(200, {"success": True, "id": contact["id"]})

    def _create_contact(self, request: ApiRequest) -> Answer:
        body = _json_object(request.body)
        if body.get("email") is None:
            raise ApiError(400, "An email is required.")
        email = _check_email(body["email"])
        user_id = None if body.get("userId") is None else _check_user_id(body["userId"])
        changes = self._contact_changes(body, frozenset({"email", "userId", "mailingLists"}))
        lists = self._lists_in(body)
        if self._lookup(email, None) or self._lookup(None, user_id):
            raise ApiError(409, "Email or userId already exists.")
        contact = self._target(email, user_id)
        _apply(contact, changes, lists)
        self._state.save_contact(contact)
        return Answer(200, {"success": True, "id": contact["id"]})

    def _find_contact(self, request: ApiRequest) -> Answer:
        emails = request.query.get("email", ())
        user_ids = request.query.get("userId", ())
        if len(emails) > 1 or len(user_ids) > 1:
            raise ApiError(400, "Provide exactly one of email or userId.")
        email, user_id = _exactly_one_identity(
            emails[0] if emails else None, user_ids[0] if user_ids else None
        )
        contact = self._lookup(email, user_id)
        return Answer(200, [] if contact is None else [render_contact(contact)])

    def _delete_contact(self, request: ApiRequest) -> Answer:
        body = _json_object(request.body)
        email, user_id = _exactly_one_identity(body.get("email"), body.get("userId"))
        contact = self._lookup(email, user_id)
        if contact is None:
            raise ApiError(404, "Contact not found.")
        self._state.delete_contact(contact["id"])
        return Answer(200, {"success": True, "message": "Contact deleted."})

    def _list_properties(self, request: ApiRequest) -> Answer:
        which = request.query.get("list", ["all"])
        # The spec lists no 400 here, but an unknown value would silently mean something:
        # refused (stricter reading).
        if len(which) != 1 or which[0] not in ("all", "custom"):
            raise ApiError(400, "list must be 'all' or 'custom'.")
        custom = [
            {"key": name, "label": property_label(name), "type": kind}
            for name, kind in self._state.custom_properties().items()
        ]
        if which[0] == "custom":
            return Answer(200, custom)
        defaults = [
            {"key": key, "label": label, "type": kind}
            for key, (label, kind) in DEFAULT_PROPERTIES.items()
        ]
        return Answer(200, defaults + custom)

    def _create_property(self, request: ApiRequest) -> Answer:
        body = _json_object(request.body)
        name, kind = body.get("name"), body.get("type")
        problem = new_property_problem(name, kind, self._state.custom_properties())
        if problem is not None:
            raise ApiError(400, problem)
        self._state.add_custom_property(str(name), str(kind))
        return Answer(200, {"success": True})

    def _mailing_lists(self, _request: ApiRequest) -> Answer:
        return Answer(200, [mailing_list.as_json() for mailing_list in self._lists])

    def _send_event(self, request: ApiRequest) -> Answer:
        key = request.idempotency_key
        if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
            raise ApiError(400, "The Idempotency-Key header must be 1 to 100 characters long.")
        body = _json_object(request.body)
        event_name = body.get("eventName")
        if not isinstance(event_name, str) or not event_name.strip():
            raise ApiError(400, "eventName is required.")
        email, user_id = _identity(body)
        event_properties = body.get("eventProperties", {})
        if not isinstance(event_properties, dict):
            raise ApiError(400, "eventProperties must be an object.")
        for name, value in event_properties.items():
            # Strings, numbers and booleans (dates travel as strings or numbers). null is
            # refused too: the docs only allow clearing contact properties.
            if not is_scalar(value):
                raise ApiError(
                    400, f"Invalid value for event property '{name}' (string, number or boolean)."
                )
        changes = self._contact_changes(
            body, frozenset({"email", "userId", "mailingLists", "eventName", "eventProperties"})
        )
        lists = self._lists_in(body)
        contact = self._target(email, user_id)
        # Checked once the request is known to be valid: a refused request doesn't use the key.
        if key is not None and self._state.idempotency_key_in_use(key):
            return failure(409, "Idempotency key has already been used in the last 24 hours.")
        with self._state.transaction():
            _apply(contact, changes, lists)
            self._state.save_contact(contact)
            self._state.record_event(
                {
                    "eventName": event_name,
                    "email": email,
                    "userId": user_id,
                    "contactId": contact["id"],
                    "eventProperties": event_properties,
                    "contactProperties": changes,
                    "mailingLists": lists,
                    "idempotencyKey": key,
                    "received_at": self._state.now(),
                }
            )
            if key is not None:
                self._state.remember_idempotency_key(key)
        return Answer(200, {"success": True})
