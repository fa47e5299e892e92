"""The config file's shape: what each key may hold, checked by pydantic, every problem found
at once (`sync.config.load_config` reads the file and words the problems; this module says what
is valid). A model is frozen: a run's config never changes once checked.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import polars as pl
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from sync.cases import ConfigTest, ConfigTests, ExpectedReject, ExpectedRequest
from sync.config_file import unknown_type

__all__ = [
    "DEFAULT_BASE_URL",
    "EVENT_REQUEST_KEYS",
    "IDENTITY_KEYS",
    "PROPERTY_TYPES",
    "RESERVED_PROPERTIES",
    "ContactSection",
    "EventSection",
    "ExcelSource",
    "LoopsSettings",
    "PropertyMapping",
    "PropertyType",
    "SourceConfig",
    "SqlSource",
    "SyncConfig",
    "known_keys",
]

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


def known_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The valid keys at a place in the file, for 'did you mean'."""
    named = [part for part in loc if isinstance(part, str)]
    if not named:
        return list(SyncConfig.model_fields)
    if len(named) >= 2 and named[-2] == "properties":
        return list(PropertyMapping.model_fields)
    model = _SECTION_MODELS.get(named[-1])
    return list(model.model_fields) if model else []
