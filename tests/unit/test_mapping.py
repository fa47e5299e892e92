"""Mapping: source rows become exactly the bodies Loops should get, or rejects with a reason."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.candidates import Mapped, map_rows
from sync.coerce import constant_problems
from sync.columns import ROW
from sync.config_model import SyncConfig
from sync.emulator.api import _too_long as emulator_refuses
from sync.errors import SourceError
from sync.keys import canonical_json

# 2024-01-02T03:04:05Z in Unix milliseconds.
MOMENT_MS = 1_704_164_645_000
DAY_MS = 1_704_153_600_000  # 2024-01-02T00:00:00Z


def spec(
    contact: dict[str, Any] | None = None, events: list[dict[str, Any]] | None = None
) -> SyncConfig:
    raw: dict[str, Any] = {"name": "test-sync", "source": {"csv": "unused.csv"}}
    if contact is not None:
        raw["contact"] = contact
    if events:
        raw["events"] = events
    return SyncConfig.model_validate(raw)


def run(config: SyncConfig, data: dict[str, list[Any]], schema: Any = None) -> Mapped:
    frame = pl.DataFrame(data, schema=schema).with_row_index(ROW, offset=1)
    return map_rows(config, frame)


def bodies(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [json.loads(body) for body in frame["body"]]


def rejects(mapped: Mapped) -> list[dict[str, Any]]:
    return [
        {"row": row[ROW], "column": row["column"], "reason": row["reason"]}
        for row in mapped.rejects.iter_rows(named=True)
    ]


def one_property(kind: str, cells: list[Any], dtype: Any = None) -> Mapped:
    """Map `cells` as property `p` of the given type, one contact per cell."""
    emails = [f"person{i}@example.com" for i in range(len(cells))]
    schema = {"Email": pl.String, "P": dtype} if dtype is not None else None
    config = spec({"email": "Email", "properties": {"p": {"column": "P", "type": kind}}})
    return run(config, {"Email": emails, "P": cells}, schema)


def values_of(mapped: Mapped) -> list[Any]:
    """The `p` value of each contact body, by row; a missing key is the string '<absent>'."""
    return [body.get("p", "<absent>") for body in bodies(mapped.contacts)]


# --- bodies ---------------------------------------------------------------------------------------


def test_bodies_are_canonical_json_text() -> None:
    config = spec(
        {"email": "Email", "properties": {"lastName": "Last", "firstName": "First"}},
        [{"name": "signup", "email": "Email", "properties": {"zeta": "Last", "alpha": "First"}}],
    )
    mapped = run(config, {"Email": ["ada@example.com"], "First": ["Ada"], "Last": ["Lovelace"]})

    for body in [*mapped.contacts["body"], *mapped.events["body"]]:
        assert body == canonical_json(json.loads(body)).decode()
    assert mapped.contacts["body"][0] == (
        '{"email":"ada@example.com","firstName":"Ada","lastName":"Lovelace"}'
    )


def test_rows_read_counts_every_source_row() -> None:
    config = spec({"email": "Email"})
    mapped = run(config, {"Email": ["a@example.com", "bad", "a@example.com"]})
    assert mapped.rows_read == 3


# --- emails and identities ------------------------------------------------------------------------


def test_emails_are_trimmed_and_lower_cased() -> None:
    mapped = run(spec({"email": "Email"}), {"Email": ["  Ada.Lovelace@Example.COM \t"]})
    assert bodies(mapped.contacts) == [{"email": "ada.lovelace@example.com"}]
    assert mapped.contacts["identity"].to_list() == ["e:ada.lovelace@example.com"]


@pytest.mark.parametrize(
    "email",
    ["frances.allen(at)hooli.xyz", "no-at-sign", "a@b", "two@@example.com", "a b@example.com"],
)
def test_a_malformed_email_is_rejected_with_row_column_and_reason(email: str) -> None:
    mapped = run(spec({"email": "Email"}), {"Email": ["ok@example.com", email]})

    assert rejects(mapped) == [
        {"row": 2, "column": "Email", "reason": f"'{email}' is not a valid email address"}
    ]
    assert bodies(mapped.contacts) == [{"email": "ok@example.com"}]


def test_an_empty_identifier_is_left_out_never_null() -> None:
    config = spec({"email": "Email", "user_id": "Id", "empty": "clear"})
    mapped = run(config, {"Email": ["ada@example.com", "", None], "Id": ["", "u2", "u3"]})

    assert bodies(mapped.contacts) == [
        {"email": "ada@example.com"},
        {"userId": "u2"},
        {"userId": "u3"},
    ]
    assert mapped.rejects.is_empty()


def test_a_row_with_neither_identity_is_rejected() -> None:
    config = spec({"email": "Email", "user_id": "Id", "properties": {"firstName": "First"}})
    mapped = run(config, {"Email": ["", "a@example.com"], "Id": [" ", ""], "First": ["Ada", "Bo"]})

    [reject] = rejects(mapped)
    assert reject["row"] == 1
    assert "no identity" in reject["reason"]
    assert bodies(mapped.contacts) == [{"email": "a@example.com", "firstName": "Bo"}]


def test_the_identity_is_the_user_id_where_there_is_one() -> None:
    config = spec({"email": "Email", "user_id": "Id"})
    mapped = run(config, {"Email": ["a@example.com", "b@example.com"], "Id": ["u1", ""]})
    assert mapped.contacts["identity"].to_list() == ["u:u1", "e:b@example.com"]


# --- numbers --------------------------------------------------------------------------------------


def test_numbers_are_coerced_and_whole_numbers_sent_as_integers() -> None:
    mapped = one_property("number", ["5", "2.5", " 7 ", "-3", "5.0", "1e3", ""])

    values = values_of(mapped)
    assert values == [5, 2.5, 7, -3, 5, 1000, "<absent>"]
    assert [type(value) for value in values[:6]] == [int, float, int, int, int, int]
    assert '"p":5}' in mapped.contacts["body"][0]


@pytest.mark.parametrize("cell", ["abc", "inf", "-inf", "nan", "NaN", "1,000", "5 apples"])
def test_a_cell_that_is_not_a_finite_number_is_rejected(cell: str) -> None:
    mapped = one_property("number", [cell])
    assert mapped.contacts.is_empty()
    assert rejects(mapped) == [{"row": 1, "column": "P", "reason": f"'{cell}' is not a number"}]


# --- booleans -------------------------------------------------------------------------------------


def test_boolean_words_in_any_case_are_coerced() -> None:
    truthy = ["true", "TRUE", "Yes", "y", "Y", "1", "t", "T", " yes "]
    falsy = ["false", "False", "NO", "n", "N", "0", "f", "F"]
    mapped = one_property("boolean", [*truthy, *falsy])

    assert values_of(mapped) == [True] * len(truthy) + [False] * len(falsy)
    assert mapped.rejects.is_empty()


@pytest.mark.parametrize("cell", ["maybe", "2", "oui", "truthy"])
def test_a_cell_that_is_not_a_boolean_is_rejected(cell: str) -> None:
    mapped = one_property("boolean", [cell])
    [reject] = rejects(mapped)
    assert reject["column"] == "P"
    assert reject["reason"].startswith(f"'{cell}' is not a boolean")
    assert mapped.contacts.is_empty()


# --- dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("2024-01-02T03:04:05Z", MOMENT_MS),
        ("2024-01-02T03:04:05z", MOMENT_MS),
        ("2024-01-02T05:04:05+02:00", MOMENT_MS),
        ("2024-01-01T22:04:05-05:00", MOMENT_MS),
        ("2024-01-02T03:04:05", MOMENT_MS),
        ("2024-01-02 03:04:05", MOMENT_MS),
        ("2024-01-02T03:04:05.123Z", MOMENT_MS + 123),
        ("2024-01-02T03:04", MOMENT_MS - 5_000),
        ("2024-01-02", DAY_MS),
        ("1704164645", MOMENT_MS),
        ("1704164645000", MOMENT_MS),
    ],
)
def test_dates_become_unix_milliseconds(cell: str, expected: int) -> None:
    mapped = one_property("date", [cell])
    assert mapped.rejects.is_empty()
    assert values_of(mapped) == [expected]


@pytest.mark.parametrize("cell", ["last tuesday", "2024-13-45", "02/01/2024", "tomorrow"])
def test_a_cell_that_is_not_a_date_is_rejected(cell: str) -> None:
    mapped = one_property("date", [cell])
    [reject] = rejects(mapped)
    assert reject["reason"].startswith(f"'{cell}' is not a date")
    assert mapped.contacts.is_empty()


@pytest.mark.parametrize(
    ("cell", "dtype"),
    [
        ("20240102", pl.String),
        (" 20240102 ", pl.String),
        (20240102, pl.Int64),
        (20240102, pl.Int32),
        (20240102.0, pl.Float64),  # an integer column with a null, as Parquet may rewrite it
    ],
)
def test_a_compact_date_is_a_date(cell: Any, dtype: Any) -> None:
    mapped = one_property("date", [cell], dtype)
    assert mapped.rejects.is_empty()
    assert values_of(mapped) == [DAY_MS]


@pytest.mark.parametrize(
    ("cell", "dtype"),
    [
        ("2024", pl.String),
        (2024, pl.Int64),
        ("7", pl.String),
        (0, pl.Int64),
        ("12345", pl.String),
        ("1234567", pl.String),
        ("20241345", pl.String),  # eight digits, but no month 13
        (20240230, pl.Int64),  # eight digits, but no 30 February
        ("99999999", pl.String),
    ],
)
def test_a_number_too_short_for_an_epoch_that_is_no_compact_date_is_rejected(
    cell: Any, dtype: Any
) -> None:
    """`2024` was 2024 seconds after 1970: no one means that."""
    mapped = one_property("date", [cell], dtype)
    [reject] = rejects(mapped)
    assert reject["reason"] == (
        f"'{cell}' is not a date (ISO 8601, YYYY-MM-DD, YYYYMMDD, or epoch seconds/ms)"
    )
    assert mapped.contacts.is_empty()


@pytest.mark.parametrize(
    ("cell", "dtype", "expected"),
    [
        ("100000000", pl.String, 100_000_000_000),  # nine digits: seconds (1973)
        (100_000_000, pl.Int64, 100_000_000_000),
        ("-315619200", pl.String, -315_619_200_000),  # 1960-01-01, before the epoch
        (-315_619_200, pl.Int64, -315_619_200_000),
        (1_704_164_645.0, pl.Float64, MOMENT_MS),
    ],
)
def test_a_number_of_nine_digits_or_more_is_epoch_seconds_or_milliseconds(
    cell: Any, dtype: Any, expected: int
) -> None:
    mapped = one_property("date", [cell], dtype)
    assert mapped.rejects.is_empty()
    assert values_of(mapped) == [expected]


# --- native dtypes (Parquet, SQL) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "dtype", "cell", "expected"),
    [
        ("number", pl.Int64, 5, 5),
        ("number", pl.Float64, 2.5, 2.5),
        ("number", pl.Float64, 3.0, 3),
        ("number", pl.Int32, -7, -7),
        ("boolean", pl.Boolean, True, True),
        ("boolean", pl.Boolean, False, False),
        ("boolean", pl.Int64, 1, True),
        ("boolean", pl.Int64, 0, False),
        ("date", pl.Datetime("us"), dt.datetime(2024, 1, 2, 3, 4, 5), MOMENT_MS),
        ("date", pl.Datetime("ns"), dt.datetime(2024, 1, 2, 3, 4, 5), MOMENT_MS),
        (
            "date",
            pl.Datetime("us", "UTC"),
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            MOMENT_MS,
        ),
        (
            "date",
            pl.Datetime("ms", "Europe/Berlin"),
            dt.datetime(2024, 1, 2, 4, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            MOMENT_MS,
        ),
        ("date", pl.Date, dt.date(2024, 1, 2), DAY_MS),
        ("date", pl.Int64, 1_704_164_645, MOMENT_MS),
        ("date", pl.Int64, MOMENT_MS, MOMENT_MS),
        ("string", pl.Int64, 7, "7"),
        ("boolean", pl.Decimal(3, 0), Decimal(1), True),
        ("boolean", pl.Decimal(3, 2), Decimal("0.00"), False),
        ("date", pl.Decimal(10, 0), Decimal(1_704_164_645), MOMENT_MS),
        ("date", pl.Decimal(8, 0), Decimal(20_240_102), DAY_MS),
    ],
)
def test_native_dtypes_are_coerced(kind: str, dtype: Any, cell: Any, expected: Any) -> None:
    mapped = one_property(kind, [cell, None], dtype)

    assert mapped.rejects.is_empty()
    assert values_of(mapped) == [expected, "<absent>"]
    assert type(values_of(mapped)[0]) is type(expected)


@pytest.mark.parametrize("cell", [float("nan"), float("inf")])
def test_a_native_float_that_is_not_finite_is_rejected(cell: float) -> None:
    mapped = one_property("number", [cell], pl.Float64)
    assert mapped.contacts.is_empty()
    assert len(rejects(mapped)) == 1


def test_a_native_integer_user_id_is_sent_as_text() -> None:
    config = spec({"user_id": "id"})
    mapped = run(config, {"id": [42]}, {"id": pl.Int64})
    assert bodies(mapped.contacts) == [{"userId": "42"}]


# --- one text form, whatever the source's types ---------------------------------------------------

# 101 as each kind of source may hold it: CSV text, Parquet integers (or floats, once a null made
# Polars or pandas widen the column), SQL integers and decimals (numeric(10,0), numeric(8,2)).
ONE_HUNDRED_AND_ONE = [
    pytest.param(pl.String, "101", id="text"),
    pytest.param(pl.Int64, 101, id="int64"),
    pytest.param(pl.Int32, 101, id="int32"),
    pytest.param(pl.UInt64, 101, id="uint64"),
    pytest.param(pl.Float64, 101.0, id="float64"),
    pytest.param(pl.Float32, 101.0, id="float32"),
    pytest.param(pl.Decimal(10, 0), Decimal("101"), id="numeric(10,0)"),
    pytest.param(pl.Decimal(8, 2), Decimal("101.00"), id="numeric(8,2)"),
]


def ids_keys_and_properties(dtype: Any, cell: Any) -> tuple[list[Any], list[Any], list[str]]:
    """Contact bodies, event bodies and event keys of a row whose `Id` cell is `cell`, and of a
    row whose `Id` is empty (the null that makes Parquet rewrite an integer column as floats)."""
    config = spec(
        {"email": "Email", "user_id": "Id", "properties": {"ref": "Id"}},
        [
            {
                "name": "order",
                "user_id": "Id",
                "properties": {"ref": "Id"},
                "once_per": ["Id"],
            }
        ],
    )
    data = {"Email": ["a@x.io", "b@x.io"], "Id": [cell, None]}
    mapped = run(config, data, {"Email": pl.String, "Id": dtype})
    assert mapped.rejects.is_empty()
    return bodies(mapped.contacts), bodies(mapped.events), mapped.events["key"].to_list()


@pytest.mark.parametrize(("dtype", "cell"), ONE_HUNDRED_AND_ONE)
def test_ids_once_per_and_text_properties_have_one_text_whatever_the_type(
    dtype: Any, cell: Any
) -> None:
    contacts, events, keys = ids_keys_and_properties(dtype, cell)

    assert contacts[0] == {"email": "a@x.io", "userId": "101", "ref": "101"}
    assert events == [{"eventName": "order", "userId": "101", "eventProperties": {"ref": "101"}}]
    assert (contacts, events, keys) == ids_keys_and_properties(pl.String, "101")


@pytest.mark.parametrize(
    ("dtype", "cell", "text"),
    [
        pytest.param(pl.Float64, 19.9, "19.9", id="float64"),
        pytest.param(pl.Float64, 0.1 + 0.2, "0.30000000000000004", id="float64-exact"),
        pytest.param(pl.Float32, 19.9, "19.9", id="float32"),
        pytest.param(pl.Decimal(8, 2), Decimal("19.90"), "19.9", id="numeric(8,2)"),
        pytest.param(pl.Decimal(8, 2), Decimal("-0.50"), "-0.5", id="numeric-negative"),
        pytest.param(pl.Decimal(8, 2), Decimal("0.00"), "0", id="numeric-zero"),
        pytest.param(pl.Decimal(12, 2), Decimal("1000.00"), "1000", id="numeric-tens"),
        pytest.param(pl.Float64, -0.0, "0", id="negative-zero"),
        pytest.param(pl.Float64, 1e16, "10000000000000000", id="float-big"),
        pytest.param(pl.String, "19.90", "19.90", id="text-as-written"),
        pytest.param(pl.String, "101.0", "101.0", id="text-stays-text"),
    ],
)
def test_a_number_as_text_is_its_shortest_form_and_text_stays_as_written(
    dtype: Any, cell: Any, text: str
) -> None:
    assert values_of(one_property("string", [cell], dtype)) == [text]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(2**53), 2**53), min_size=1, max_size=8))
def test_an_integral_value_is_one_text_from_text_int_float_or_decimal(numbers: list[int]) -> None:
    as_written = [str(number) for number in numbers]
    for dtype, cells in [
        (pl.String, as_written),
        (pl.Int64, numbers),
        (pl.Float64, [float(number) for number in numbers]),
        (pl.Decimal(38, 0), [Decimal(number) for number in numbers]),
        (pl.Decimal(38, 4), [Decimal(number) for number in numbers]),
    ]:
        assert values_of(one_property("string", cells, dtype)) == as_written, dtype


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_as_text_reads_back_as_the_same_float(number: float) -> None:
    [text] = values_of(one_property("string", [number], pl.Float64))
    assert float(text) == number
    if number.is_integer() and abs(number) < 2**63:
        assert text == str(int(number))


@settings(max_examples=100, deadline=None)
@given(st.decimals(min_value=-(10**9), max_value=10**9, places=3))
def test_a_decimal_as_text_has_no_trailing_zeros(number: Decimal) -> None:
    [text] = values_of(one_property("string", [number], pl.Decimal(18, 3)))
    assert Decimal(text) == number
    assert text == f"{number.normalize() + 0:f}"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [(Decimal("19.90"), 19.9), (Decimal("101.00"), 101), (Decimal("-3.50"), -3.5)],
)
def test_a_decimal_column_is_a_number(cell: Decimal, expected: float) -> None:
    mapped = one_property("number", [cell, None], pl.Decimal(8, 2))
    assert mapped.rejects.is_empty()
    assert values_of(mapped) == [expected, "<absent>"]
    assert type(values_of(mapped)[0]) is type(expected)


def test_a_nested_column_the_config_does_not_map_is_left_alone() -> None:
    config = spec({"email": "Email", "properties": {"firstName": "First"}})
    data = {"Email": ["a@x.io"], "First": ["Ada"], "tags": [["a", "b"]], "meta": [{"k": 1}]}
    mapped = run(config, data)
    assert bodies(mapped.contacts) == [{"email": "a@x.io", "firstName": "Ada"}]


# --- constants ------------------------------------------------------------------------------------


def test_constants_go_into_every_body_with_their_type() -> None:
    config = spec(
        {
            "email": "Email",
            "properties": {
                "source": {"value": "clay"},
                "seats": {"value": 5},
                "vip": {"value": True},
                "since": {"value": "2024-01-02", "type": "date"},
            },
        }
    )
    mapped = run(config, {"Email": ["a@example.com", "b@example.com"]})

    assert [body["source"] for body in bodies(mapped.contacts)] == ["clay", "clay"]
    first = bodies(mapped.contacts)[0]
    assert first["seats"] == 5
    assert type(first["seats"]) is int
    assert first["vip"] is True
    assert first["since"] == DAY_MS


@pytest.mark.parametrize("kind", ["string", "number", "boolean", "date"])
@pytest.mark.parametrize("empty", ["skip", "clear"])
def test_a_blank_constant_is_an_empty_cell(kind: str, empty: str) -> None:
    """Left out, or sent as null with `empty: clear`, like an empty cell of its type."""
    blank = {"value": "  ", "type": kind}
    config = spec(
        {"email": "Email", "empty": empty, "properties": {"p": blank}},
        [{"name": "signup", "email": "Email", "properties": {"p": blank}}],
    )
    mapped = run(config, {"Email": ["a@example.com"]})

    assert mapped.rejects.is_empty()
    expected = {"email": "a@example.com"} | ({"p": None} if empty == "clear" else {})
    assert bodies(mapped.contacts) == [expected]
    assert bodies(mapped.events) == [{"email": "a@example.com", "eventName": "signup"}]


# --- mailing lists --------------------------------------------------------------------------------


def test_mailing_lists_come_from_boolean_columns() -> None:
    config = spec({"email": "Email", "mailing_lists": {"list1": "News", "list2": "Beta"}})
    data = {
        "Email": ["a@example.com", "b@example.com", "c@example.com"],
        "News": ["yes", "FALSE", ""],
        "Beta": ["1", "", None],
    }
    mapped = run(config, data)

    assert [body.get("mailingLists") for body in bodies(mapped.contacts)] == [
        {"list1": True, "list2": True},
        {"list1": False},
        None,
    ]


def test_a_mailing_list_cell_that_is_not_a_boolean_rejects_the_row() -> None:
    config = spec({"email": "Email", "mailing_lists": {"list1": "News"}})
    mapped = run(config, {"Email": ["a@example.com", "b@example.com"], "News": ["maybe", "yes"]})

    [reject] = rejects(mapped)
    assert reject["row"] == 1
    assert reject["column"] == "News"
    assert "'maybe' is not a boolean" in reject["reason"]
    assert mapped.contacts["identity"].to_list() == ["e:b@example.com"]


def test_native_boolean_mailing_lists() -> None:
    config = spec({"email": "Email", "mailing_lists": {"list1": "News"}})
    data = {
        "Email": ["a@example.com", "b@example.com", "c@example.com"],
        "News": [True, False, None],
    }
    mapped = run(config, data, {"Email": pl.String, "News": pl.Boolean})
    assert [body.get("mailingLists") for body in bodies(mapped.contacts)] == [
        {"list1": True},
        {"list1": False},
        None,
    ]


# --- empty cells ----------------------------------------------------------------------------------


def test_empty_skip_leaves_empty_cells_out() -> None:
    config = spec(
        {
            "email": "Email",
            "properties": {"firstName": "First", "n": {"column": "N", "type": "number"}},
        }
    )
    mapped = run(
        config, {"Email": ["a@example.com", "b@example.com"], "First": ["", None], "N": [" ", None]}
    )
    assert bodies(mapped.contacts) == [{"email": "a@example.com"}, {"email": "b@example.com"}]


def test_empty_clear_sends_null_for_properties_only() -> None:
    config = spec(
        {
            "email": "Email",
            "user_id": "Id",
            "properties": {"firstName": "First", "n": {"column": "N", "type": "number"}},
            "mailing_lists": {"list1": "News"},
            "empty": "clear",
        }
    )
    data = {
        "Email": ["a@example.com", ""],
        "Id": ["", "u2"],
        "First": ["", "Bo"],
        "N": [None, "3"],
        "News": ["", ""],
    }
    mapped = run(config, data)

    assert bodies(mapped.contacts) == [
        {"email": "a@example.com", "firstName": None, "n": None},
        {"userId": "u2", "firstName": "Bo", "n": 3},
    ]


def test_events_never_send_null_even_with_empty_clear() -> None:
    config = spec(
        {"email": "Email", "empty": "clear"},
        [{"name": "signup", "email": "Email", "properties": {"plan": "Plan"}}],
    )
    mapped = run(config, {"Email": ["a@example.com"], "Plan": [""]})
    assert bodies(mapped.events) == [{"eventName": "signup", "email": "a@example.com"}]


# --- subscribed -----------------------------------------------------------------------------------


def test_subscribed_is_never_sent_unless_mapped() -> None:
    data = {"Email": ["a@example.com"], "subscribed": ["true"], "First": ["Ada"]}
    for empty in ("skip", "clear"):
        config = spec(
            {"email": "Email", "properties": {"firstName": "First"}, "empty": empty},
            [{"name": "signup", "email": "Email"}],
        )
        mapped = run(config, data)
        for body in [*mapped.contacts["body"], *mapped.events["body"]]:
            assert "subscribed" not in body

    mapped_on_purpose = spec(
        {
            "email": "Email",
            "properties": {"subscribed": {"column": "subscribed", "type": "boolean"}},
        }
    )
    assert bodies(run(mapped_on_purpose, data).contacts) == [
        {"email": "a@example.com", "subscribed": True}
    ]


# --- the 500-character limit ----------------------------------------------------------------------


def test_a_value_of_500_json_characters_passes_whole_and_501_is_rejected() -> None:
    config = spec({"email": "Email", "properties": {"note": "Note"}})
    fits = "x" * 498  # 498 + 2 quotes = 500
    over = "x" * 499  # 499 + 2 quotes = 501
    mapped = run(config, {"Email": ["a@example.com", "b@example.com"], "Note": [fits, over]})

    assert bodies(mapped.contacts) == [{"email": "a@example.com", "note": fits}]
    assert rejects(mapped) == [
        {
            "row": 2,
            "column": "Note",
            "reason": "value of 501 characters is over Loops' limit of 500",
        }
    ]


@pytest.mark.parametrize(
    ("value", "json_length"),
    [
        ("x" * 496 + '""', 502),  # 498 characters, but each quote is escaped as \"
        ("x" * 497 + "\\", 501),  # a backslash is escaped too
        ("x" * 248 + "\n" + "x" * 249, 501),  # a newline inside the text becomes \n
        ("x" * 493 + "\x01", 501),  # a control character becomes \u0001 (6 characters)
        ("x" * 497 + "😀", 501),  # outside the BMP: two UTF-16 units, as Loops counts
    ],
)
def test_escaping_counts_towards_the_limit(value: str, json_length: int) -> None:
    config = spec({"email": "Email", "properties": {"note": "Note"}})
    mapped = run(config, {"Email": ["a@example.com"], "Note": [value]})

    assert mapped.contacts.is_empty()
    [reject] = rejects(mapped)
    assert reject["reason"] == f"value of {json_length} characters is over Loops' limit of 500"


def test_quotes_under_the_limit_pass_unchanged() -> None:
    value = '"' * 249  # 249 escaped quotes: 498 + 2 = 500
    config = spec(
        {"email": "Email"}, [{"name": "e", "email": "Email", "properties": {"note": "Note"}}]
    )
    mapped = run(config, {"Email": ["a@example.com"], "Note": [value]})
    assert bodies(mapped.events)[0]["eventProperties"] == {"note": value}


def test_an_over_long_event_property_rejects_the_row() -> None:
    config = spec(
        {"email": "Email"}, [{"name": "e", "email": "Email", "properties": {"note": "Note"}}]
    )
    mapped = run(config, {"Email": ["a@example.com"], "Note": ["y" * 600]})
    assert mapped.contacts.is_empty()
    assert mapped.events.is_empty()
    assert rejects(mapped)[0]["column"] == "Note"


# --- duplicates and rejected rows -----------------------------------------------------------------


def test_the_last_row_of_an_identity_wins_and_the_others_are_counted() -> None:
    config = spec({"email": "Email", "properties": {"firstName": "First"}})
    data = {
        "Email": ["ada@example.com", "bo@example.com", " ADA@example.com", "Ada@Example.com"],
        "First": ["first", "Bo", "second", "third"],
    }
    mapped = run(config, data)

    assert mapped.duplicates == 2
    assert bodies(mapped.contacts) == [
        {"email": "bo@example.com", "firstName": "Bo"},
        {"email": "ada@example.com", "firstName": "third"},
    ]
    assert mapped.contacts[ROW].to_list() == [2, 4]


def test_a_rejected_row_sends_nothing() -> None:
    config = spec(
        {"email": "Email", "properties": {"seats": {"column": "Seats", "type": "number"}}},
        [{"name": "signup", "email": "Email", "properties": {"plan": "Plan"}}],
    )
    data = {
        "Email": ["a@example.com", "b@example.com"],
        "Seats": ["lots", "3"],
        "Plan": ["pro", "pro"],
    }
    mapped = run(config, data)

    assert mapped.contacts["identity"].to_list() == ["e:b@example.com"]
    assert mapped.events["identity"].to_list() == ["e:b@example.com"]
    assert rejects(mapped) == [{"row": 1, "column": "Seats", "reason": "'lots' is not a number"}]


def test_every_problem_of_a_row_is_in_its_reject() -> None:
    config = spec(
        {
            "email": "Email",
            "properties": {
                "n": {"column": "N", "type": "number"},
                "d": {"column": "D", "type": "date"},
            },
        }
    )
    mapped = run(config, {"Email": ["bad"], "N": ["x"], "D": ["never"]})

    [reject] = rejects(mapped)
    assert reject["column"] == "Email; N; D"
    assert "not a valid email" in reject["reason"]
    assert "'x' is not a number" in reject["reason"]
    assert "'never' is not a date" in reject["reason"]


# --- events ---------------------------------------------------------------------------------------


def test_event_bodies_have_name_identity_and_properties() -> None:
    config = spec(
        None,
        [
            {
                "name": "orderPlaced",
                "email": "Email",
                "user_id": "Id",
                "properties": {
                    "total": {"column": "Total", "type": "number"},
                    "sku": "Sku",
                    "plan.tier": "Sku",
                },
            }
        ],
    )
    mapped = run(
        config, {"Email": ["A@Example.com"], "Id": ["u1"], "Total": ["9.5"], "Sku": ["x-1"]}
    )

    assert bodies(mapped.events) == [
        {
            "eventName": "orderPlaced",
            "email": "a@example.com",
            "userId": "u1",
            "eventProperties": {"total": 9.5, "sku": "x-1", "plan.tier": "x-1"},
        }
    ]
    assert mapped.events["event"].to_list() == ["orderPlaced"]
    assert mapped.contacts.is_empty()


def test_when_filters_the_rows_that_get_an_event() -> None:
    config = spec(
        {"email": "Email"},
        [{"name": "paid", "email": "Email", "when": "\"Plan\" = 'pro'"}],
    )
    data = {
        "Email": ["a@example.com", "b@example.com", "c@example.com"],
        "Plan": ["pro", "free", None],
    }
    mapped = run(config, data)

    assert mapped.events["identity"].to_list() == ["e:a@example.com"]
    assert mapped.contacts.height == 3


def test_a_bad_cell_in_an_event_that_does_not_apply_rejects_nothing() -> None:
    config = spec(
        {"email": "Email"},
        [
            {
                "name": "paid",
                "email": "Email",
                "when": "\"Plan\" = 'pro'",
                "properties": {"n": {"column": "N", "type": "number"}},
            }
        ],
    )
    mapped = run(
        config,
        {"Email": ["a@example.com", "b@example.com"], "Plan": ["free", "pro"], "N": ["x", "y"]},
    )

    assert [reject["row"] for reject in rejects(mapped)] == [2]
    assert mapped.contacts["identity"].to_list() == ["e:a@example.com"]


SEATS = {"Email": ["a@x.io", "b@x.io", "c@x.io"], "seats": ["5", "n/a", "2"]}


def test_a_when_that_fails_on_a_cell_is_an_error_naming_the_filter_the_row_and_the_value() -> None:
    """The README's own `CAST(seats AS INT) > 3`, on a CSV with a cell 'n/a'."""
    config = spec(
        {"email": "Email"},
        [
            {"name": "signup", "email": "Email"},
            {"name": "team", "email": "Email", "when": "CAST(seats AS INT) > 3"},
        ],
    )
    with pytest.raises(SourceError) as caught:
        run(config, SEATS)

    message = str(caught.value)
    assert message.startswith("events[1].when: `CAST(seats AS INT) > 3` fails on row 2")
    assert "seats = 'n/a'" in message
    assert "TRY_CAST(" in message
    assert "Traceback" not in message
    assert caught.value.exit_code == 2


def test_try_cast_in_a_when_makes_a_cell_that_does_not_convert_no_match() -> None:
    config = spec(
        {"email": "Email"},
        [{"name": "team", "email": "Email", "when": "TRY_CAST(seats AS INT) > 3"}],
    )
    mapped = run(config, SEATS)
    assert [body["email"] for body in bodies(mapped.events)] == ["a@x.io"]
    assert mapped.contacts.height == 3
    assert mapped.rejects.is_empty()


def signup_keys(data: dict[str, list[Any]], once_per: list[str] | None = None) -> list[str]:
    event: dict[str, Any] = {"name": "signup", "email": "Email", "properties": {"plan": "Plan"}}
    if once_per:
        event["once_per"] = once_per
    return run(spec(None, [event]), data).events["key"].to_list()


def test_event_keys_do_not_change_with_event_properties() -> None:
    before = {"Email": ["a@example.com", "b@example.com"], "Plan": ["free", "pro"]}
    after = {"Email": ["a@example.com", "b@example.com"], "Plan": ["team", "enterprise"]}
    assert signup_keys(before) == signup_keys(after)
    assert len(set(signup_keys(before))) == 2


def test_event_keys_change_with_once_per_values() -> None:
    first = {"Email": ["a@example.com"], "Plan": ["pro"], "Order": ["o-1"]}
    second = {"Email": ["a@example.com"], "Plan": ["pro"], "Order": ["o-2"]}
    assert signup_keys(first, ["Order"]) != signup_keys(second, ["Order"])
    assert signup_keys(first, ["Order"]) != signup_keys(first)


def test_once_per_makes_each_value_a_new_event_and_repeats_one() -> None:
    data = {"Email": ["a@example.com"] * 3, "Plan": ["pro"] * 3, "Order": ["o-1", "o-2", "o-1"]}
    config = spec(None, [{"name": "order", "email": "Email", "once_per": ["Order"]}])
    mapped = run(config, data)

    assert mapped.events[ROW].to_list() == [2, 3]
    assert "Order" not in mapped.events["body"][0]
    # Without once_per: one event per contact.
    assert len(signup_keys(data)) == 1


# --- cases found in review ---------------------------------------------------------------------


def test_an_empty_once_per_cell_makes_no_event() -> None:
    """A users LEFT JOIN orders query: a user without orders has placed no order."""
    config = spec(
        {"email": "Email"},
        [{"name": "orderPlaced", "email": "Email", "once_per": ["order_id"]}],
    )
    mapped = run(config, {"Email": ["a@x.io", "b@x.io", "b@x.io"], "order_id": [None, "1", "2"]})
    assert [b["email"] for b in bodies(mapped.events)] == ["b@x.io", "b@x.io"]
    assert mapped.rejects.is_empty()


def test_once_per_values_are_not_held_to_the_length_limit() -> None:
    config = spec(None, [{"name": "seen", "email": "Email", "once_per": ["url"]}])
    mapped = run(config, {"Email": ["a@x.io"], "url": ["https://example.com/" + "x" * 600]})
    assert mapped.events.height == 1


@pytest.mark.parametrize(("cell", "expected"), [(1.0, True), (0.0, False), (1, True), (0, False)])
def test_numeric_booleans_from_parquet(cell: float, expected: bool) -> None:
    assert values_of(
        one_property("boolean", [cell], pl.Float64 if isinstance(cell, float) else pl.Int64)
    ) == [expected]


def test_a_numeric_boolean_other_than_1_or_0_rejects_the_row() -> None:
    mapped = one_property("boolean", [2.0], pl.Float64)
    assert mapped.contacts.is_empty()
    assert "not a boolean" in rejects(mapped)[0]["reason"]


def test_a_rejected_last_row_wins_over_an_earlier_valid_one() -> None:
    """Sending the earlier row would put outdated values into Loops; the fix is the bad row."""
    config = spec(
        {"email": "Email", "properties": {"seats": {"column": "Seats", "type": "number"}}}
    )
    mapped = run(config, {"Email": ["a@x.io", "A@x.io"], "Seats": ["3", "three"]})
    assert mapped.contacts.is_empty()
    assert [r["row"] for r in rejects(mapped)] == [2]
    assert mapped.duplicates == 1


def test_subscribed_is_never_sent_as_null_even_with_empty_clear() -> None:
    config = spec(
        {
            "email": "Email",
            "properties": {"subscribed": {"column": "Sub", "type": "boolean"}, "plan": "Plan"},
            "empty": "clear",
        }
    )
    mapped = run(
        config,
        {"Email": ["a@x.io"], "Sub": [None], "Plan": [None]},
        {"Email": pl.String, "Sub": pl.String, "Plan": pl.String},
    )
    assert bodies(mapped.contacts) == [{"email": "a@x.io", "plan": None}]


def test_a_datetime_column_mapped_as_text_is_iso_8601() -> None:
    moment = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    mapped = one_property("string", [moment], pl.Datetime("us", "UTC"))
    assert values_of(mapped) == ["2024-01-02T03:04:05.000+00:00"]


def test_a_constant_its_type_refuses_is_a_config_problem() -> None:
    config = spec({"email": "Email", "properties": {"seats": {"value": "many", "type": "number"}}})
    [problem] = constant_problems(config)
    assert problem.path == "contact.properties.seats.value"
    assert "not a number" in problem.message


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=80, max_size=520))
def test_the_length_limit_agrees_with_the_emulator(text: str) -> None:
    """What the mapping lets through, the emulator (and so Loops' counting) accepts, and back."""
    cell = text.strip()
    mapped = one_property("string", [cell or "x"])
    assert mapped.contacts.is_empty() == emulator_refuses(cell or "x")


def test_rows_that_loops_would_merge_into_one_contact_are_rejected_naming_each_other() -> None:
    """Same email, different user ids (or one without): one contact in Loops."""
    config = spec({"email": "email", "user_id": "id"}, [{"name": "signup", "email": "email"}])
    result = run(
        config,
        {
            "email": ["ann@x.com", "bob@x.com", "ANN@x.com", "ann@x.com", "cy@x.com"],
            "id": ["1", "2", "3", None, "5"],
        },
    )
    rejects = dict(zip(result.rejects[ROW], result.rejects["reason"], strict=True))
    assert set(rejects) == {1, 3, 4}
    assert "'ann@x.com' is on rows 1, 3, 4 with different user ids" in rejects[1]
    assert sorted(result.contacts[ROW]) == [2, 5]
    assert set(result.events["email"]) == {"bob@x.com", "cy@x.com"}


def test_an_event_waits_when_its_contacts_last_row_is_rejected() -> None:
    """The last row wins, also when it is rejected: no upsert this run, so no event either."""
    config = spec(
        {"email": "email", "properties": {"seats": {"column": "seats", "type": "number"}}},
        [{"name": "signup", "email": "email"}],
    )
    result = run(
        config, {"email": ["ann@x.com", "ann@x.com", "bob@x.com"], "seats": ["3", "n/a", "1"]}
    )
    assert result.rejects[ROW].to_list() == [2]
    assert result.contacts["email"].to_list() == ["bob@x.com"]
    assert result.events["email"].to_list() == ["bob@x.com"]


def test_rows_of_one_user_id_with_different_emails_are_rejected_naming_each_other() -> None:
    config = spec({"email": "email", "user_id": "id"}, [{"name": "signup", "email": "email"}])
    result = run(config, {"email": ["a@x.com", "b@x.com", "c@x.com"], "id": ["7", "7", "8"]})
    rejects = dict(zip(result.rejects[ROW], result.rejects["reason"], strict=True))
    assert set(rejects) == {1, 2}
    assert "user id 7 is on rows 1, 2 with different emails" in rejects[2]
    assert result.contacts["email"].to_list() == ["c@x.com"]
    assert result.events["email"].to_list() == ["c@x.com"]


def test_mapping_is_pure_it_does_not_know_the_ledger() -> None:
    """Planning is the only stage that knows what Loops holds: mapping never imports it."""
    code = (
        "import sys, sync.mapping; print(sorted(m for m in sys.modules if m.startswith('sync.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    for later_stage in ("sync.ledger", "sync.settle", "sync.dedupe", "sync.plan", "sync.sender"):
        assert f"'{later_stage}'" not in loaded
