"""Keys: the same payload gives the same bytes and the same key on any machine, any day."""

from __future__ import annotations

import copy
import math
import random
from hashlib import sha256
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.keys import (
    canonical_json,
    contact_hash,
    event_key,
    event_keys,
    hash_event_keys,
    json_member,
    json_members,
    json_nested,
    json_object,
    json_value,
    legacy_event_key,
    legacy_event_keys,
    payload_hash,
    payload_hashes,
)

# What a body can hold: JSON scalars (no NaN/inf), nested in lists and objects.
texts = st.text(max_size=20)
scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts
scalars |= st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
objects = st.dictionaries(texts, json_values, max_size=6)
names = st.text(min_size=1, max_size=40)
# Any Unicode text (Hypothesis leaves out lone surrogates, which UTF-8 cannot encode), with
# control characters, NUL, the BMP's edge and characters beyond it weighted in.
awkward = ["\x00", "\n", '"', "\\", "é", "ü", "\u0800", "\uffff", "😀", "\U0010ffff", "a"]
any_text = st.text(max_size=300) | st.text(st.sampled_from(awkward), max_size=80)


def rebuilt(value: Any, order: random.Random) -> Any:
    """The same value, every dict rebuilt with its keys inserted in a shuffled order."""
    if isinstance(value, dict):
        items = list(value.items())
        order.shuffle(items)
        return {key: rebuilt(item, order) for key, item in items}
    if isinstance(value, list):
        return [rebuilt(item, order) for item in value]
    return value


# --- canonical JSON -------------------------------------------------------------------------------


@given(value=objects, order=st.randoms())
def test_canonical_json_and_contact_hash_do_not_depend_on_key_order(
    value: dict[str, Any], order: random.Random
) -> None:
    shuffled = rebuilt(value, order)
    assert shuffled == value
    assert canonical_json(shuffled) == canonical_json(value)
    assert contact_hash(shuffled) == contact_hash(value)


@given(value=objects)
def test_canonical_json_is_the_same_bytes_for_the_same_input(value: dict[str, Any]) -> None:
    encoded = canonical_json(value)
    assert canonical_json(copy.deepcopy(value)) == encoded
    assert orjson.loads(encoded) == value
    assert canonical_json(orjson.loads(encoded)) == encoded


@given(text=st.text())
def test_canonical_json_writes_any_unicode_as_utf8(text: str) -> None:
    encoded = canonical_json({"value": text})
    assert orjson.loads(encoded) == {"value": text}
    decoded = encoded.decode("utf-8")
    # Non-ASCII text is written as itself, not as \u escapes: one form for each string.
    assert all(c in decoded for c in text if c >= " " and c not in '"\\')


def test_canonical_json_sorts_keys_at_every_depth_and_has_no_spaces() -> None:
    value = {"b": {"z": 1, "a": [2, {"y": True, "x": None}]}, "a": "é ü 😀"}
    assert (
        canonical_json(value) == '{"a":"é ü 😀","b":{"a":[2,{"x":null,"y":true}],"z":1}}'.encode()
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("place", ["top", "nested dict", "nested list"])
def test_canonical_json_refuses_nan_and_infinity(bad: float, place: str) -> None:
    value: Any = {
        "top": {"x": bad},
        "nested dict": {"a": {"b": bad}},
        "nested list": {"a": [1, [bad]]},
    }[place]
    with pytest.raises(ValueError, match="no JSON form"):
        canonical_json(value)


# --- contact hashes -------------------------------------------------------------------------------


@given(payload=objects.filter(bool), order=st.data())
def test_contact_hash_changes_when_any_value_changes(payload: dict[str, Any], order: Any) -> None:
    key = order.draw(st.sampled_from(sorted(payload)))
    new_value = order.draw(
        json_values.filter(lambda v: canonical_json(v) != canonical_json(payload[key]))
    )
    changed = {**payload, key: new_value}
    assert contact_hash(changed) != contact_hash(payload)


def test_contact_hash_is_the_payload_hash_of_the_canonical_body() -> None:
    payload = {"email": "ada@example.com", "firstName": "Ada"}
    assert contact_hash(payload) == payload_hash(canonical_json(payload))


# --- event keys -----------------------------------------------------------------------------------


once_per_maps = st.dictionaries(names, st.text(), max_size=3)


@given(sync=names, event=names, identity=names, once_per=once_per_maps)
def test_event_keys_are_deterministic_and_fit_the_header(
    sync: str, event: str, identity: str, once_per: dict[str, str]
) -> None:
    key = event_key(sync, event, identity, once_per)
    assert key == event_key(sync, event, identity, dict(reversed(once_per.items())))
    assert key.startswith("ls2-")
    assert len(key) <= 100
    assert key.isascii()


@given(
    parts=st.lists(names, min_size=3, max_size=3),
    other=names,
    index=st.integers(0, 2),
)
def test_event_keys_depend_on_sync_event_and_identity(
    parts: list[str], other: str, index: int
) -> None:
    changed = list(parts)
    changed[index] = other
    same = changed == parts
    assert (event_key(*changed) == event_key(*parts)) == same


@given(base=once_per_maps, other=once_per_maps)
def test_event_keys_depend_on_once_per_columns_and_values(
    base: dict[str, str], other: dict[str, str]
) -> None:
    same = base == other
    assert (event_key("s", "e", "e:a@b.co", base) == event_key("s", "e", "e:a@b.co", other)) == same


def test_event_key_parts_cannot_run_into_each_other() -> None:
    assert event_key("ab", "c", "id") != event_key("a", "bc", "id")
    assert event_key("s", "e", "id", {"a": "b"}) != event_key("s", "e", "id", {"ab": ""})
    assert event_key("s", "e", "id", {}) != event_key("s", "e", "id", {"": ""})
    assert event_key("s", "e", "e:42") != event_key("s", "e", "u:42")


def test_an_event_key_never_equals_a_contact_hash() -> None:
    assert event_key("s", "e", "id").split("-", 1)[0] != contact_hash({}).split(":", 1)[0]


# --- known answers: a change of scheme must be made on purpose ------------------------------------


def test_the_event_key_scheme_is_pinned() -> None:
    # Delivered events are remembered by this key forever: a new scheme re-sends every event.
    assert event_key("clay-leads", "paidPlanLead", "e:ada@example.com") == (
        "ls2-" + sha256(b'["ls2","clay-leads","paidPlanLead","e:ada@example.com",{}]').hexdigest()
    )
    assert event_key("shop-customers", "orderPlaced", "u:42", {"order_id": "1001"}) == (
        "ls2-"
        + sha256(b'["ls2","shop-customers","orderPlaced","u:42",{"order_id":"1001"}]').hexdigest()
    )


def test_the_ls1_keys_of_older_ledgers_are_still_computed_as_they_were() -> None:
    assert legacy_event_key("clay-leads", "paidPlanLead", "e:ada@example.com") == (
        "ls1-92773ddd64f3d7517485cb2ba7b0733f507c74c49503a7eccb89c812aa2b5bb7"
    )
    assert legacy_event_key("shop-customers", "orderPlaced", "u:42", ["1001"]) == (
        "ls1-0ef165c33dd34e72129382bf1695cfdd2244c6cbbe180884258ca20d20ce4e1b"
    )


def test_the_contact_hash_scheme_is_pinned() -> None:
    payload = {"email": "ada@example.com", "firstName": "Ada", "seats": 5, "vip": True}
    assert contact_hash(payload) == (
        "c1:1be11451d5ab5f326f1899cf8ad8d1659e49e8dfcdda9f2c9394ba8bb942aec3"
    )


# --- the vectorised form agrees with the reference, byte for byte --------------------------------

cells = st.one_of(st.none(), st.text(max_size=30))
numbers = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**60), max_value=2**60).map(float),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(cells, numbers, st.one_of(st.none(), st.booleans())), min_size=1, max_size=20
    ),
    st.sampled_from(["b", "é", "z", "A", "\\u00e9x", "😀"]),
)
def test_json_object_writes_exactly_the_canonical_json(
    rows: list[tuple[str | None, float | None, bool | None]], key: str
) -> None:
    frame = pl.DataFrame(
        rows, schema={"s": pl.String, "n": pl.Float64, "b": pl.Boolean}, orient="row"
    )
    nested = json_object({"flag": json_value(pl.col("b")), key: json_value(pl.col("s"))})
    body = json_object(
        {
            key: pl.when(pl.col("s").is_not_null()).then(json_value(pl.col("s"))),
            "n": json_value(pl.col("n"), number=True),
            "nested": nested,
        }
    )
    for text in frame.select(body).to_series().to_list():
        parsed = orjson.loads(text)
        assert canonical_json(parsed).decode() == text
        if parsed["n"] is not None and float(parsed["n"]).is_integer() and abs(parsed["n"]) < 2**53:
            assert isinstance(parsed["n"], int)


def expected_number(value: float) -> float | int:
    """A whole number is written as an integer where it is exact."""
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none() | any_text,
            numbers,
            st.none() | st.integers(-(2**63), 2**63 - 1),
            st.none() | st.booleans(),
        ),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from(["b", "é", "z", "A", "\\u00e9x", "😀", 'q"\\', "\x01"]),
)
def test_json_members_write_exactly_the_canonical_json(
    rows: list[tuple[str | None, float | None, int | None, bool | None]], key: str
) -> None:
    frame = pl.DataFrame(
        rows,
        schema={"s": pl.String, "n": pl.Float64, "i": pl.Int64, "b": pl.Boolean},
        orient="row",
    )
    body = json_members(
        {
            key: json_member(key, pl.col("s"), "string"),
            "n": json_member("n", pl.col("n"), "number", null=True),
            "i": json_member("i", pl.col("i"), "integer"),
            "nested": json_nested(
                "nested",
                {
                    "flag": json_member("flag", pl.col("b"), "boolean"),
                    key: json_member(key, pl.col("s"), "string"),
                },
            ),
            "never": None,
        }
    )
    for text, (s, n, i, b) in zip(frame.select(body).to_series().to_list(), rows, strict=True):
        nested = {name: v for name, v in (("flag", b), (key, s)) if v is not None}
        expected = {
            key: s,
            "n": None if n is None else expected_number(n),
            "i": i,
            "nested": nested or None,
        }
        kept = {name: v for name, v in expected.items() if v is not None or name == "n"}
        assert text == canonical_json(kept).decode()


def test_json_members_of_nothing_are_an_empty_object() -> None:
    frame = pl.DataFrame({"s": [None, "a"]}, schema={"s": pl.String})
    nested = json_nested("g", {"s": json_member("s", pl.col("s"), "string")})
    body = json_members({"g": nested, "t": json_member("t", pl.col("s"), "string")})
    assert frame.select(body).to_series().to_list() == ["{}", '{"g":{"s":"a"},"t":"a"}']
    empty = frame.with_columns(json_members({"never": None}).alias("o"))
    assert empty.get_column("o").to_list() == ["{}", "{}"]


@settings(max_examples=100, deadline=None)
@given(
    st.text(max_size=40),
    st.text(min_size=1, max_size=20),
    st.lists(st.text(max_size=10), max_size=3),
)
def test_event_keys_of_a_column_equal_event_key(identity: str, event: str, once: list[str]) -> None:
    frame = pl.DataFrame({"id": [identity], **{f"o{i}": [v] for i, v in enumerate(once)}})
    columns = {f"o{i}": pl.col(f"o{i}") for i in range(len(once))}
    key = hash_event_keys(event_keys("sync-ä", event, pl.col("id"), columns))
    expected = event_key("sync-ä", event, identity, {f"o{i}": v for i, v in enumerate(once)})
    assert frame.select(key).to_series().to_list() == [expected]
    legacy = legacy_event_keys("sync-ä", event, pl.col("id"), list(columns.values()))
    assert frame.select(hash_event_keys(legacy, scheme="ls1")).to_series().to_list() == [
        legacy_event_key("sync-ä", event, identity, once)
    ]


def test_an_occurrence_without_the_identifier_has_no_key() -> None:
    frame = pl.DataFrame({"id": [None, "u:1"]}, schema={"id": pl.String})
    keys = frame.select(hash_event_keys(event_keys("s", "e", pl.col("id"), {}))).to_series()
    assert keys.to_list() == [None, event_key("s", "e", "u:1")]


# --- sha256 in Polars (the polars-hash plugin) equals hashlib's, byte for byte --------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.none() | any_text, min_size=1, max_size=30))
def test_payload_hashes_of_a_column_equal_payload_hash(texts: list[str | None]) -> None:
    frame = pl.DataFrame({"body": texts}, schema={"body": pl.String})
    hashed = frame.select(payload_hashes(pl.col("body"))).to_series().to_list()
    assert hashed == [None if t is None else payload_hash(t.encode()) for t in texts]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.none() | any_text, min_size=1, max_size=30), st.sampled_from(["ls1", "ls2"]))
def test_hash_event_keys_of_a_column_equal_hashlib(texts: list[str | None], scheme: str) -> None:
    frame = pl.DataFrame({"material": texts}, schema={"material": pl.String})
    hashed = frame.select(hash_event_keys(pl.col("material"), scheme=scheme)).to_series()
    expected = [None if t is None else f"{scheme}-{sha256(t.encode()).hexdigest()}" for t in texts]
    assert hashed.to_list() == expected


def test_the_vectorised_hashes_are_pinned() -> None:
    frame = pl.DataFrame({"t": ["", "é😀\x00"]})
    assert frame.select(payload_hashes(pl.col("t"))).to_series().to_list() == [
        "c1:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "c1:" + sha256("é😀\x00".encode()).hexdigest(),
    ]
    payload = {"email": "ada@example.com", "firstName": "Ada", "seats": 5, "vip": True}
    bodies = pl.DataFrame({"t": [canonical_json(payload).decode()]})
    assert bodies.select(payload_hashes(pl.col("t"))).item() == (
        "c1:1be11451d5ab5f326f1899cf8ad8d1659e49e8dfcdda9f2c9394ba8bb942aec3"
    )
