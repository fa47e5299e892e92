"""The emulated team's account: its contact properties and mailing lists, the rules Loops
documents for them, and the files an emulator can be started with (`--properties`, `--lists`).

Both files are JSON in the shape Loops answers `GET /v1/contacts/properties` and `GET /v1/lists`,
so that a real account's answers, saved with curl, start an emulator that looks like it:

    [{"key": "planName", "label": "Plan name", "type": "string"}, ...]
    [{"id": "cm06f5v0e45nf0ml5754o9cix", "name": "Newsletter", "description": null,
      "isPublic": true}, ...]

A properties file may also be an object of names and types (`{"planName": "string"}`), shorter
to write by hand. Default properties in it (a `list=all` answer) are skipped; labels are not
kept (the emulator derives them from the names, as Loops does for properties created by name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "DEFAULT_LISTS",
    "DEFAULT_PROPERTIES",
    "PROPERTY_TYPES",
    "READ_ONLY_FIELDS",
    "RESERVED_NAMES",
    "AccountFileError",
    "MailingList",
    "is_reserved",
    "load_lists",
    "load_properties",
    "new_property_problem",
    "property_label",
    "seed_problems",
]

RESERVED_NAMES = frozenset({"id", "listId", "softDeleteAt", "teamId", "updatedAt"})
# Compared case-insensitively (stricter than the docs, which only list the exact spellings).
_RESERVED_LOWER = frozenset(name.lower() for name in RESERVED_NAMES)
# Output-only fields of a Contact: a request can't set them.
READ_ONLY_FIELDS = frozenset({"optInStatus"})
PROPERTY_TYPES = ("string", "number", "boolean", "date")

# Default contact properties: key -> (label, type).
DEFAULT_PROPERTIES: dict[str, tuple[str, str]] = {
    "email": ("Email", "string"),
    "firstName": ("First name", "string"),
    "lastName": ("Last name", "string"),
    "notes": ("Notes", "string"),
    "source": ("Source", "string"),
    "subscribed": ("Subscribed", "boolean"),
    "userGroup": ("User group", "string"),
    "userId": ("User ID", "string"),
}

_CAMEL_CASE = re.compile(r"[a-z][a-zA-Z0-9]*", re.ASCII)


@dataclass(frozen=True)
class MailingList:
    """A mailing list of the emulated team (OpenAPI `MailingList`)."""

    id: str
    name: str
    description: str | None = None
    is_public: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "isPublic": self.is_public,
        }


DEFAULT_LISTS = (
    MailingList("cm06f5v0e45nf0ml5754o9cix", "Newsletter", "Monthly news and tips", True),
    MailingList("cm16k73gq014h0mmj5b6jdi9r", "Product updates", None, True),
    MailingList("clm2k8j4h6g0f8d6s4a2b0z8", "Beta testers", "Early access programme", False),
)


def is_reserved(name: str) -> bool:
    return name.lower() in _RESERVED_LOWER


def property_label(name: str) -> str:
    """favoriteColor -> "Favorite color", as Loops labels properties created by name."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()
    return words[:1].upper() + words[1:]


def new_property_problem(name: object, kind: object, taken: Iterable[str]) -> str | None:
    """Why `POST /v1/contacts/properties` refuses `{name, type}` (Loops' 400), or None.

    The docs ask for a camelCase name, not a reserved one, and one of the four types; a
    property is created once. Taken names are compared case-insensitively, with the default
    properties and the contact's own fields (stricter reading: the docs are silent).
    """
    if not isinstance(name, str) or not _CAMEL_CASE.fullmatch(name):
        return "The property name must be in camelCase, like planName."
    if is_reserved(name):
        return f"'{name}' is a reserved name."
    if kind not in PROPERTY_TYPES:
        return "Invalid type: use string, number, boolean or date."
    every = {*DEFAULT_PROPERTIES, *taken, "mailingLists", *READ_ONLY_FIELDS}
    if name.lower() in {key.lower() for key in every}:
        return "Property already exists."
    return None


class AccountFileError(ValueError):
    """A `--properties` or `--lists` file that cannot describe an account; says where."""


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as error:
        raise AccountFileError(f"{path}: cannot read it: {error.strerror}") from None
    except orjson.JSONDecodeError as error:
        raise AccountFileError(f"{path}: not valid JSON: {error}") from None


def load_properties(path: Path) -> dict[str, str]:
    """The custom properties a `--properties` file gives: name -> type, in the file's order."""
    data = _read_json(path)
    if isinstance(data, dict):
        entries = [{"key": key, "type": kind} for key, kind in data.items()]
    elif isinstance(data, list):
        entries = data
    else:
        raise AccountFileError(
            f"{path}: give a list of {{key, type}} objects (as GET /v1/contacts/properties "
            "answers) or an object of names and types"
        )
    properties: dict[str, str] = {}
    for number, entry in enumerate(entries, start=1):
        name, kind = _property_entry(path, number, entry)
        if name in DEFAULT_PROPERTIES and DEFAULT_PROPERTIES[name][1] == kind:
            continue  # a `list=all` answer lists the default properties too
        problem = _seed_problem(name, kind, properties)
        if problem:
            raise AccountFileError(f"{path}: property {number} ('{name}'): {problem}")
        properties[name] = kind
    return properties


def _property_entry(path: Path, number: int, entry: object) -> tuple[str, str]:
    if not isinstance(entry, dict):
        raise AccountFileError(f"{path}: property {number} is not an object")
    name, kind = entry.get("key"), entry.get("type")
    if not isinstance(name, str) or not name:
        raise AccountFileError(f"{path}: property {number} has no 'key'")
    if not isinstance(kind, str):
        raise AccountFileError(f"{path}: property {number} ('{name}') has no 'type'")
    return name, kind


def seed_problems(properties: Mapping[Any, Any]) -> list[str]:
    """What keeps each of these custom properties (name -> type) out of an account."""
    problems: list[str] = []
    earlier: dict[str, str] = {}
    for name, kind in properties.items():
        if not isinstance(name, str) or not name or not isinstance(kind, str):
            problems.append(f"'{name}': give a name and a type as text")
            continue
        problem = _seed_problem(name, kind, earlier)
        if problem:
            problems.append(f"'{name}': {problem}")
        earlier[name] = kind
    return problems


def _seed_problem(name: str, kind: str, earlier: Mapping[str, str]) -> str | None:
    """What keeps a property out of an account (camelCase is not required here: an account
    may hold properties Loops made from other names)."""
    if is_reserved(name):
        return "a reserved name"
    if kind not in PROPERTY_TYPES:
        return f"unknown type '{kind}' (use string, number, boolean or date)"
    if name in DEFAULT_PROPERTIES or name in READ_ONLY_FIELDS or name == "mailingLists":
        return "the name of a default contact field"
    if name.lower() in {key.lower() for key in earlier}:
        return "given twice"
    return None


def load_lists(path: Path) -> tuple[MailingList, ...]:
    """The mailing lists a `--lists` file gives, as GET /v1/lists answers them."""
    data = _read_json(path)
    if not isinstance(data, list):
        raise AccountFileError(f"{path}: give a list of {{id, name}} objects (as GET /v1/lists)")
    lists: list[MailingList] = []
    for number, entry in enumerate(data, start=1):
        if not isinstance(entry, dict):
            raise AccountFileError(f"{path}: list {number} is not an object")
        list_id, name = entry.get("id"), entry.get("name")
        description, public = entry.get("description"), entry.get("isPublic", True)
        if not isinstance(list_id, str) or not list_id:
            raise AccountFileError(f"{path}: list {number} has no 'id'")
        if not isinstance(name, str):
            raise AccountFileError(f"{path}: list {number} ('{list_id}') has no 'name'")
        if description is not None and not isinstance(description, str):
            raise AccountFileError(f"{path}: list {number}: 'description' must be text or null")
        if not isinstance(public, bool):
            raise AccountFileError(f"{path}: list {number}: 'isPublic' must be true or false")
        if any(known.id == list_id for known in lists):
            raise AccountFileError(f"{path}: list {number}: the id '{list_id}' is given twice")
        lists.append(MailingList(list_id, name, description, public))
    return tuple(lists)
