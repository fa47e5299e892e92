"""The Loops account against the config: custom properties it lacks, properties of another type,
mailing lists it does not have.

Loops drops a value whose property the account lacks without a word (since 2024 no 400), so a
typo in a property name loses data on every run; a mailing-list id that does not exist fails
every row that maps it. Both are found here before anything is sent: `read_account()` asks
Loops (`GET /v1/contacts/properties`, `GET /v1/lists`), `account_problems()` compares, each
problem named by its config key and line; `require_account()` is what `run` calls before
sending, `create_properties()` what `check --create-properties` does.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import httpx

from sync.config import Config
from sync.config_file import KeyLines, parse_yaml
from sync.config_model import PropertyType
from sync.errors import AccountError, ConfigError, ConfigProblem, FatalApiError, RejectedRow
from sync.loops_api import (
    CHECK_PAUSE,
    CHECK_TIMEOUT,
    LISTS_PATH,
    PROPERTIES_PATH,
    LoopsClient,
    quickly,
)
from sync.signals import run_until_stopped

__all__ = [
    "DEFAULT_PROPERTIES",
    "Account",
    "Created",
    "account_problems",
    "config_lines",
    "create_properties",
    "mapped_properties",
    "missing_properties",
    "read_account",
    "require_account",
]

# Every account has these (loops.so/docs/contacts/properties); one that an account's listing
# leaves out is still there, with this type.
DEFAULT_PROPERTIES: dict[str, str] = {
    "firstName": "string",
    "lastName": "string",
    "notes": "string",
    "source": "string",
    "subscribed": "boolean",
    "userGroup": "string",
}
LISTS_SHOWN = 5
RUN_ADVICE = (
    "Create the missing properties with `loops-sync check {file} --create-properties` (a "
    "property's type or a mailing list is changed in Loops itself), or send anyway with "
    "`loops-sync run --no-check`."
)


@dataclass(frozen=True)
class Account:
    """What a Loops team has that a sync maps onto: its contact properties (key -> type, the
    default ones and the custom ones) and its mailing lists (id -> name)."""

    team: str
    properties: dict[str, str]
    lists: dict[str, str]


@dataclass(frozen=True)
class Created:
    """A property `check --create-properties` asked Loops to create, and Loops' refusal if any."""

    name: str
    type: PropertyType
    refused: str | None = None


def mapped_properties(config: Config) -> dict[str, PropertyType]:
    """The contact properties the mapping sends, with the type it sends each as.

    Event properties are left out: Loops has no API that lists them.
    """
    contact = config.spec.contact
    if contact is None:
        return {}
    return {name: mapping.value_type for name, mapping in contact.properties.items()}


def missing_properties(config: Config, account: Account) -> dict[str, PropertyType]:
    """The mapped properties the account lacks (what `--create-properties` would create)."""
    known = {**DEFAULT_PROPERTIES, **account.properties}
    return {name: kind for name, kind in mapped_properties(config).items() if name not in known}


def account_problems(
    config: Config, account: Account, lines: KeyLines, refused: Mapping[str, str] | None = None
) -> list[ConfigProblem]:
    """Every mapped property the account lacks or types otherwise, every mapped mailing list
    it does not have; `refused`: Loops' reason for each property it would not create."""
    refused = refused or {}
    known = {**DEFAULT_PROPERTIES, **account.properties}
    problems = []
    for name, kind in mapped_properties(config).items():
        loc = ("contact", "properties", name)
        if name not in known:
            message = _missing(name, kind, known)
            if name in refused:
                message += f"; creating it failed: {refused[name]}"
            problems.append(_problem(loc, lines, message))
        elif known[name] != kind:
            changeable = name not in DEFAULT_PROPERTIES
            message = _other_type(name, kind, known[name], changeable=changeable)
            problems.append(_problem(loc, lines, message))
    contact = config.spec.contact
    for list_id in contact.mailing_lists if contact else {}:
        if list_id not in account.lists:
            loc = ("contact", "mailing_lists", list_id)
            problems.append(_problem(loc, lines, _unknown_list(list_id, account.lists)))
    return problems


def _problem(loc: tuple[str, ...], lines: KeyLines, message: str) -> ConfigProblem:
    return ConfigProblem(".".join(loc), message, lines.get(loc))


def _missing(name: str, kind: str, known: Mapping[str, str]) -> str:
    message = (
        f"the Loops account has no contact property '{name}', so Loops would drop its values "
        f"without a word; create it (as {kind}) with `loops-sync check --create-properties`"
    )
    same = [key for key in known if key.lower() == name.lower()]
    close = same or difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    if close:
        message += f", or did you mean '{close[0]}'?"
    return message


def _other_type(name: str, kind: str, account_type: str, *, changeable: bool) -> str:
    message = (
        f"'{name}' is a {account_type} property in the Loops account, but the mapping sends "
        f"a {kind}: set `type: {account_type}` if the column holds {account_type} values"
    )
    return message + (", or have the property's type changed in Loops" if changeable else "")


def _unknown_list(list_id: str, lists: Mapping[str, str]) -> str:
    message = f"the Loops account has no mailing list '{list_id}'"
    by_name = [key for key, name in lists.items() if name.strip().lower() == list_id.lower()]
    if by_name:
        return f"{message}: '{list_id}' is the name of list {by_name[0]}; give the list's id"
    close = difflib.get_close_matches(list_id, list(lists), n=1, cutoff=0.8)
    if close:
        return f"{message}; did you mean '{close[0]}' ({lists[close[0]]})?"
    if not lists:
        return f"{message} (it has none; lists are created in Loops, not through the API)"
    shown = ", ".join(f"{key} ({name})" for key, name in list(lists.items())[:LISTS_SHOWN])
    more = ", …" if len(lists) > LISTS_SHOWN else ""
    return f"{message} (its lists: {shown}{more})"


def config_lines(config: Config) -> KeyLines:
    """The line of each key of the config file, as it was loaded; none if it changed since."""
    try:
        text = config.file.read_text(encoding="utf-8")
        if hashlib.sha256(text.encode()).hexdigest() != config.config_hash:
            return {}
        return parse_yaml(str(config.file), text)[1]
    except (OSError, UnicodeDecodeError, ConfigError):
        return {}


# --- asking Loops ---------------------------------------------------------------------------


def read_account(
    config: Config,
    api_key: str,
    *,
    team: str = "",
    transport: httpx.AsyncBaseTransport | None = None,
    pause: float = CHECK_PAUSE,
    handle_signals: bool = False,
) -> Account:
    """The account's properties and mailing lists: two requests, each tried a few times within
    seconds (as the key check is). FatalApiError when Loops cannot be reached or answers
    something that is not the Loops API; `team` is the name the key check gave.
    `handle_signals`: a stop signal ends it as Ctrl-C does (`sync.signals`)."""
    read = partial(_read_account, config, api_key, team, transport, pause)
    return run_until_stopped(read, watch=handle_signals)


async def _read_account(
    config: Config,
    api_key: str,
    team: str,
    transport: httpx.AsyncBaseTransport | None,
    pause: float,
) -> Account:
    client = _client(config, api_key, transport)
    try:
        properties = await _ask(client, PROPERTIES_PATH, pause)
        lists = await _ask(client, LISTS_PATH, pause)
    finally:
        await client.aclose()
    return Account(
        team=team,
        properties=_named(properties, "key", "type", client.base_url, PROPERTIES_PATH),
        lists=_named(lists, "id", "name", client.base_url, LISTS_PATH),
    )


def _client(
    config: Config, api_key: str, transport: httpx.AsyncBaseTransport | None
) -> LoopsClient:
    timeout = min(config.spec.loops.timeout, CHECK_TIMEOUT)
    return LoopsClient(
        config.base_url, api_key, timeout=timeout, max_connections=1, transport=transport
    )


async def _ask(client: LoopsClient, path: str, pause: float) -> Any:
    async def get() -> Any:
        return await client.read(path)

    return await quickly(get, client.base_url, f"answer GET {path}", pause)


def _named(data: Any, key: str, value: str, base_url: str, path: str) -> dict[str, str]:
    """`[{key: ..., value: ...}, ...]` as a dict; any other shape is not Loops' answer."""
    if isinstance(data, list) and all(
        isinstance(item, dict) and isinstance(item.get(key), str) for item in data
    ):
        return {item[key]: str(item.get(value) or "") for item in data}
    raise FatalApiError(
        f"{base_url} answered GET {path} with something other than a list of objects with "
        f"'{key}': it does not look like the Loops API. Check loops.base_url or LOOPS_BASE_URL."
    )


def create_properties(
    config: Config,
    api_key: str,
    wanted: Mapping[str, PropertyType],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    pause: float = CHECK_PAUSE,
) -> list[Created]:
    """Ask Loops to create each property (`POST /v1/contacts/properties`), in the mapping's
    order; one Loops refuses (a name not in camelCase, one taken) says why, the others go on."""
    return anyio.run(_create_properties, config, api_key, dict(wanted), transport, pause)


async def _create_properties(
    config: Config,
    api_key: str,
    wanted: dict[str, PropertyType],
    transport: httpx.AsyncBaseTransport | None,
    pause: float,
) -> list[Created]:
    client = _client(config, api_key, transport)
    created = []
    try:
        for name, kind in wanted.items():
            try:
                await _create(client, name, kind, pause)
            except RejectedRow as refused:
                created.append(Created(name, kind, str(refused)))
            else:
                created.append(Created(name, kind))
    finally:
        await client.aclose()
    return created


async def _create(client: LoopsClient, name: str, kind: str, pause: float) -> None:
    async def post() -> None:
        await client.create_property(name, kind)

    await quickly(post, client.base_url, f"create the property '{name}'", pause)


def require_account(
    config: Config,
    api_key: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    handle_signals: bool = False,
) -> Account:
    """Before a run sends: the account must have every property the mapping sends, of the type
    it sends, and every mailing list it maps, or AccountError lists what it lacks (exit 2).
    Two requests; the key was checked just before."""
    account = read_account(config, api_key, transport=transport, handle_signals=handle_signals)
    problems = account_problems(config, account, config_lines(config))
    if problems:
        advice = RUN_ADVICE.format(file=config.file)
        raise AccountError(str(config.file), problems, advice)
    return account
