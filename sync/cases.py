"""The `tests:` section of a config, as written: cases of source rows and what they must produce.

A case gives rows as the source would hold them (column → one value) and the exact requests a
first sync makes of them, each as `contact:` (the body of `PUT /v1/contacts/update`) or
`event:` (the body of `POST /v1/events/send`), and the rows it rejects. `sync.config_tests`
runs them; here only their shape is checked, at load, each problem at its key and line.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = ["Cell", "ConfigTest", "ConfigTests", "ExpectedReject", "ExpectedRequest"]

RequestKind = Literal["contact", "event"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_value(value: object) -> object:
    """A cell holds one value; a list or mapping is refused once, in words, rather than by
    each of the union's types in turn."""
    if isinstance(value, list | dict | set | tuple):
        raise ValueError(  # noqa: TRY004  # pydantic words a ValueError, not a TypeError
            "a cell holds one value (text, a number, true/false, a date, or nothing), "
            "not a list or mapping"
        )
    return value


Cell = Annotated[str | bool | int | float | datetime | date | None, BeforeValidator(_one_value)]


class ExpectedRequest(_Model):
    """One request the rows must produce: `contact:` or `event:`, and its JSON body."""

    contact: dict[str, Any] | None = None
    event: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ExpectedRequest:
        if (self.contact is None) == (self.event is None):
            raise ValueError(
                "give exactly one of 'contact' (an upsert's body) or 'event' (an event's body)"
            )
        return self

    @property
    def kind(self) -> RequestKind:
        return "contact" if self.contact is not None else "event"

    @property
    def body(self) -> dict[str, Any]:
        body = self.contact if self.contact is not None else self.event
        return body or {}


class ExpectedReject(_Model):
    """A row the sync must reject: its number among the case's rows (from 1) and, optionally,
    the column named and words the reason contains."""

    row: int = Field(ge=1)
    column: str | None = None
    reason: str | None = None


class ConfigTest(_Model):
    """One case: rows, and everything they produce. Requests and rejects are both exact (none
    more, none fewer); at least one of them is written, so an empty case is a choice."""

    name: str = Field(min_length=1, max_length=200)
    rows: list[dict[str, Cell]] = Field(min_length=1)
    requests: list[ExpectedRequest] = Field(default_factory=list)
    rejects: list[ExpectedReject] = Field(default_factory=list)

    @model_validator(mode="after")
    def _expects_something(self) -> ConfigTest:
        if not {"requests", "rejects"} & self.model_fields_set:
            raise ValueError(
                "say what the rows produce: 'requests' (write 'requests: []' for none), "
                "'rejects', or both"
            )
        beyond = sorted({r.row for r in self.rejects if r.row > len(self.rows)})
        if beyond:
            shown = ", ".join(str(row) for row in beyond)
            count = f"{len(self.rows)} row{'' if len(self.rows) == 1 else 's'}"
            raise ValueError(f"rejects name row {shown}, but the case has {count}")
        rows = [r.row for r in self.rejects]
        twice = sorted({row for row in rows if rows.count(row) > 1})
        if twice:
            raise ValueError(f"rejects name row {', '.join(map(str, twice))} more than once")
        return self


def _unique_names(cases: list[ConfigTest]) -> list[ConfigTest]:
    names = [case.name for case in cases]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"test names must be unique: {', '.join(twice)}")
    return cases


ConfigTests = Annotated[list[ConfigTest], AfterValidator(_unique_names)]
