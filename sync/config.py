"""The YAML config: typed, checked once at start, every problem reported together.

`load_config()` turns a file into a `Config` or raises one `ConfigError` listing each problem
with its key path, its line in the file and, for a misspelt key, the closest valid name (the
file is read, and its problems worded, by `sync.config_file`; the models here say what is valid).
Column names are checked later, against the source's real columns (`check_columns`), because
only the source knows them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import polars as pl
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sync.budget import budget_place
from sync.cases import ConfigTest, ConfigTests, ExpectedReject, ExpectedRequest
from sync.config_file import (
    expand_variables,
    parse_yaml,
    unknown_type,
    validation_problems,
)
from sync.errors import ConfigError, ConfigProblem
from sync.ledger_db import PgState, is_postgresql
from sync.state import StateDir

__all__ = ["Config", "PropertyMapping", "SyncConfig", "load_config"]

DEFAULT_BASE_URL = "https://app.loops.so/api"
RESERVED_PROPERTIES = frozenset({"id", "listId", "softDeleteAt", "teamId", "updatedAt"})
# Keys the contact section sets itself; a property mapping may not shadow them.
IDENTITY_KEYS = frozenset({"email", "userId", "mailingLists"})
# The event request's own fields: a contact's upsert may ride on an event, its properties then
# beside these keys, so no contact property may take their names.
EVENT_REQUEST_KEYS = frozenset({"eventName", "eventProperties"})
PropertyType = Literal["string", "number", "boolean", "date"]
PROPERTY_TYPES: tuple[PropertyType, ...] = ("string", "number", "boolean", "date")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _column_shorthand(value: object) -> object:
    """`firstName: First Name` means `firstName: {column: First Name}`."""
    return {"column": value} if isinstance(value, str) else value


def _property_type(value: object) -> object:
    """One of the four types; anything else is refused naming the value and the closest type."""
    if value is None or value in PROPERTY_TYPES:
        return value
    raise ValueError(unknown_type(value, PROPERTY_TYPES))


class PropertyMapping(_Model):
    """Where one property's value comes from: a source column, or a constant."""

    column: str | None = None
    value: str | int | float | bool | None = None
    type: Annotated[PropertyType | None, BeforeValidator(_property_type)] = None

    @model_validator(mode="after")
    def _one_source(self) -> PropertyMapping:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of 'column' or 'value'")
        return self

    @property
    def value_type(self) -> PropertyType:
        """The declared type; a constant without one takes its YAML type."""
        if self.type is not None:
            return self.type
        if isinstance(self.value, bool):
            return "boolean"
        if isinstance(self.value, int | float):
            return "number"
        return "string"


def _contact_property_name(name: str) -> str:
    if name in RESERVED_PROPERTIES:
        raise ValueError(f"'{name}' is reserved by Loops and cannot be a property")
    if name in IDENTITY_KEYS:
        raise ValueError(f"'{name}' is set by the section's own key, not as a property")
    if name in EVENT_REQUEST_KEYS:
        raise ValueError(f"'{name}' is a field of Loops' requests, not a contact property")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"'{name}' is not a valid Loops property name (use camelCase)")
    return name


def _event_property_name(name: str) -> str:
    if name in RESERVED_PROPERTIES:
        raise ValueError(f"'{name}' is reserved by Loops and cannot be an event property")
    return name


# Names are checked as dict keys, not by a section validator: each bad name is then reported at
# its own line, together with every other problem of the section (a model validator only runs
# once the rest of its section is valid).
_Mapping = Annotated[PropertyMapping, BeforeValidator(_column_shorthand)]
ContactProperties = dict[Annotated[str, AfterValidator(_contact_property_name)], _Mapping]
EventProperties = dict[Annotated[str, AfterValidator(_event_property_name)], _Mapping]


class ExcelSource(_Model):
    path: str
    sheet: str | None = None


def _path_shorthand(value: object) -> object:
    """`excel: leads.xlsx` means `excel: {path: leads.xlsx}`: its first sheet, as `csv:` reads."""
    return {"path": value} if isinstance(value, str) else value


class SqlSource(_Model):
    url: str
    query: str


class SourceConfig(_Model):
    """Exactly one of csv / parquet / excel / sql."""

    csv: str | None = None
    parquet: str | None = None
    excel: Annotated[ExcelSource | None, BeforeValidator(_path_shorthand)] = None
    sql: SqlSource | None = None
    encoding: str = "utf-8"
    separator: str = Field(default=",", min_length=1, max_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceConfig:
        given = [kind for kind in ("csv", "parquet", "excel", "sql") if getattr(self, kind)]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(f"give exactly one of csv, parquet, excel, sql (found: {found})")
        return self

    @property
    def kind(self) -> Literal["csv", "parquet", "excel", "sql"]:
        for kind in ("csv", "parquet", "excel", "sql"):
            if getattr(self, kind):
                return kind
        raise AssertionError("validated: one source kind is set")


class LoopsSettings(_Model):
    api_key_env: str = "LOOPS_API_KEY"
    base_url: str = DEFAULT_BASE_URL
    rate_limit: float = Field(default=10, gt=0, le=10_000)
    concurrency: int | None = Field(default=None, ge=1, le=256)
    timeout: float = Field(default=30, gt=0)
    max_attempts: int = Field(default=6, ge=1, le=20)
    # Runs with the same team name share one rate budget, whatever API key they use; without
    # one, runs with the same key do (sync.budget).
    team: str | None = Field(default=None, min_length=1, max_length=100)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


def _sql_condition(when: str | None) -> str | None:
    """A `when` must parse as SQL; whether it runs on the source's columns is checked with
    them (`check_columns`)."""
    if when is not None:
        try:
            pl.sql_expr(when)
        except Exception as error:  # noqa: BLE001  # Polars raises several types for bad SQL
            raise ValueError(f"'when' is not a valid SQL condition: {error}") from None
    return when


class ContactSection(_Model):
    email: str | None = None
    user_id: str | None = None
    # Which rows become contacts, in the SQL of events' `when` (a Clay export holds leads too).
    when: str | None = None
    properties: ContactProperties = Field(default_factory=dict)
    mailing_lists: dict[str, str] = Field(default_factory=dict)
    empty: Literal["skip", "clear"] = "skip"
    # What happens to a contact delivered before that the source no longer has (`sync.departures`).
    removed: Literal["keep", "unsubscribe", "remove_from_lists", "delete"] = "keep"
    max_removed: int | None = Field(default=None, ge=0)  # default: 5% of the ledger, at least 10

    check_when = field_validator("when")(_sql_condition)

    @model_validator(mode="after")
    def _valid(self) -> ContactSection:
        if self.email is None and self.user_id is None:
            raise ValueError("give the column of 'email', of 'user_id', or both")
        if self.removed == "remove_from_lists" and not self.mailing_lists:
            raise ValueError(
                "removed: remove_from_lists takes contacts off the mailing lists the config "
                "maps, and it maps none: add mailing_lists, or choose unsubscribe"
            )
        return self


class EventSection(_Model):
    name: str = Field(max_length=200)
    email: str | None = None
    user_id: str | None = None
    when: str | None = None
    properties: EventProperties = Field(default_factory=dict)
    once_per: list[str] = Field(default_factory=list)

    # Field validators, so that a name Loops refuses is reported with every other problem.
    @field_validator("name")
    @classmethod
    def _loops_event_name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("an event needs a name (this one is blank)")
        if ":" in name:
            raise ValueError(f"'{name}' contains ':', which Loops refuses in event names")
        return name

    # A field validator, so a bad condition is reported with the section's other problems.
    check_when = field_validator("when")(_sql_condition)

    @model_validator(mode="after")
    def _valid(self) -> EventSection:
        if self.email is None and self.user_id is None:
            raise ValueError("give the column of 'email', of 'user_id', or both")
        return self


class SyncConfig(_Model):
    """The whole file, as written."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    source: SourceConfig
    loops: LoopsSettings = Field(default_factory=LoopsSettings)
    contact: ContactSection | None = None
    events: list[EventSection] = Field(default_factory=list)
    state: str | None = None
    tests: ConfigTests = Field(default_factory=list)  # run by `loops-sync test` and `check`

    @model_validator(mode="after")
    def _has_work(self) -> SyncConfig:
        if self.contact is None and not self.events:
            raise ValueError("give a 'contact' section, an 'events' list, or both")
        names = [event.name for event in self.events]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"event names must be unique: {', '.join(twice)}")
        return self

    def filters(self) -> list[tuple[str, str]]:
        """Each `when` given, with its key path: the contact's, then each event's."""
        found = [("contact.when", self.contact.when)] if self.contact else []
        found += [(f"events[{index}].when", event.when) for index, event in enumerate(self.events)]
        return [(path, when) for path, when in found if when]


@dataclass(frozen=True)
class Config:
    """A checked config plus what comes from outside the file: its place and the environment,
    read once by `load_config`.

    `api_key` is the value of the variable `loops.api_key_env` names, trimmed (a key file saved
    with CRLF leaves a `\\r`), None if unset or blank; it prints as stars. Whether it can go in
    an HTTP header is checked only by a run that sends, so `plan` and `--dry-run` need no key.
    """

    file: Path
    spec: SyncConfig
    base_url: str
    state_dir: Path
    config_hash: str
    api_key: SecretStr | None
    # Where the team's rate budget is kept: a directory, or a postgresql:// URL; None: off.
    budget_place: str | None = None
    # A PostgreSQL state: the ledger, history and lock are kept there (`state_dir` then holds
    # only the run's local files).
    database: PgState | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> StateDir:
        """Every file this sync keeps between runs: ask it for a path, never build one."""
        return StateDir(self.state_dir, self.name, self.database)

    def resolve(self, path: str) -> Path:
        """Paths in the config are relative to the config file, not to the working directory."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.file.parent / candidate

    def source_columns(self) -> list[str]:
        """Every source column the mapping reads, in a stable order."""
        spec = self.spec
        columns: list[str] = []
        if spec.contact:
            columns += [c for c in (spec.contact.email, spec.contact.user_id) if c]
            columns += [p.column for p in spec.contact.properties.values() if p.column]
            columns += list(spec.contact.mailing_lists.values())
        for event in spec.events:
            columns += [c for c in (event.email, event.user_id) if c]
            columns += [p.column for p in event.properties.values() if p.column]
            columns += event.once_per
        return list(dict.fromkeys(columns))


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and check a config file; raise `ConfigError` with every problem found.

    `env` (os.environ by default) is read here and nowhere else: the API key, LOOPS_BASE_URL,
    LOOPS_SYNC_STATE, where the rate budget lives (LOOPS_SYNC_BUDGET, XDG_STATE_HOME, HOME), and
    the `${NAME}` variables in the source's paths, `sql.url` and `state`.
    """
    env = os.environ if env is None else env
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(file), [ConfigProblem("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(file), [ConfigProblem("", f"cannot read: {error}")]) from None
    raw, lines = parse_yaml(str(file), text)
    unset = expand_variables(raw, lines, env)
    try:
        spec = SyncConfig.model_validate(raw)
    except ValidationError as error:
        problems = [*unset, *validation_problems(error, lines, _known_keys)]
        raise ConfigError(str(file), problems) from None
    if unset:
        raise ConfigError(str(file), unset)
    state_dir = _state_dir(file, spec, env)
    return Config(
        file=file.resolve(),
        spec=spec,
        base_url=_base_url(str(file), spec, env),
        state_dir=state_dir,
        config_hash=hashlib.sha256(text.encode()).hexdigest(),
        api_key=_api_key(spec, env),
        budget_place=budget_place(env, spec.state, state_dir),
        database=_database(str(file), spec, env),
    )


def _database(file: str, spec: SyncConfig, env: Mapping[str, str]) -> PgState | None:
    """The PostgreSQL state LOOPS_SYNC_STATE (else `state:`) names, if it is a URL; a bad one,
    or one without the driver installed, is a ConfigError that never shows the URL."""
    key, given = (
        ("LOOPS_SYNC_STATE", env["LOOPS_SYNC_STATE"])
        if env.get("LOOPS_SYNC_STATE")
        else ("state", spec.state or "")
    )
    if not is_postgresql(given.strip()):
        return None
    try:
        database = PgState.parse(given)
    except ValueError as error:
        raise ConfigError(file, [ConfigProblem(key, str(error))]) from None
    if importlib.util.find_spec("psycopg") is None:
        problem = "a PostgreSQL state needs psycopg: pip install 'loops-sync[postgres]'"
        raise ConfigError(file, [ConfigProblem(key, problem)])
    return database


def _state_dir(file: Path, spec: SyncConfig, env: Mapping[str, str]) -> Path:
    """LOOPS_SYNC_STATE, else `state:`, else `.loops-sync/` beside the config; with a
    PostgreSQL state, `.loops-sync/` beside the config, for the run's local files.

    A relative path in the environment is relative to the working directory, as any path typed
    in a shell is; only paths written in the config are relative to the config file.
    """
    given = env.get("LOOPS_SYNC_STATE") or spec.state or ""
    if is_postgresql(given.strip()):
        return (file.resolve().parent / ".loops-sync").resolve()
    if env.get("LOOPS_SYNC_STATE"):
        return Path(env["LOOPS_SYNC_STATE"]).expanduser().resolve()
    base = file.resolve().parent
    return (base / Path(spec.state).expanduser() if spec.state else base / ".loops-sync").resolve()


def _api_key(spec: SyncConfig, env: Mapping[str, str]) -> SecretStr | None:
    key = env.get(spec.loops.api_key_env, "").strip()
    return SecretStr(key) if key else None


def _base_url(file: str, spec: SyncConfig, env: Mapping[str, str]) -> str:
    """LOOPS_BASE_URL overrides the file's, and is held to the same rule (the value not echoed)."""
    override = env.get("LOOPS_BASE_URL")
    if not override:
        return spec.loops.base_url
    if not re.match(r"^https?://[^/\s]+", override):
        problem = ConfigProblem("LOOPS_BASE_URL", "must start with http:// or https://")
        raise ConfigError(file, [problem])
    return override.rstrip("/")


_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "source": SourceConfig,
    "loops": LoopsSettings,
    "contact": ContactSection,
    "events": EventSection,
    "excel": ExcelSource,
    "sql": SqlSource,
    "tests": ConfigTest,
    "requests": ExpectedRequest,
    "rejects": ExpectedReject,
}


def _known_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The valid keys at a place in the file, for 'did you mean'."""
    named = [part for part in loc if isinstance(part, str)]
    if not named:
        return list(SyncConfig.model_fields)
    if len(named) >= 2 and named[-2] == "properties":
        return list(PropertyMapping.model_fields)
    model = _SECTION_MODELS.get(named[-1])
    return list(model.model_fields) if model else []
