"""Deterministic keys: the same input gives the same key on any machine, any day.

A contact's payload hash tells the ledger whether Loops already holds exactly this payload.
An event occurrence is (sync, event name, the contact, the `once_per` values), and Loops matches
a contact by its email or its userId: so an occurrence has a key per identifier it carries, one
made from `e:<email>` and one from `u:<userId>`, and counts as delivered when either is in the
ledger. The one sent as `Idempotency-Key` is the email's when there is an email (emails are what
every event carries), else the userId's. Editing an event's properties never changes its keys.
Each key starts with a kind and a scheme version, so a contact hash can never equal an event key
and the scheme can change on purpose. Polars' own hashes are not stable across versions: sha256.
`ls1` keys (one identity per occurrence, `once_per` values without their column names) are still
computed for ledgers written before `ls2`.

Two forms of each live here: `canonical_json()`, `payload_hash()` and `event_key()` for one
Python value (the reference, hashed by hashlib), and Polars expressions that do the same for a
whole column at once, byte for byte (tests hold them to it on random input): `json_object()` /
`json_value()` write the JSON, `payload_hashes()` / `hash_event_keys()` hash it with the
polars-hash plugin's sha256, in Polars' threads, four times cheaper than hashlib called per row
from Python. Polars' JSON writer escapes strings and formats floats exactly as orjson does; keys
are sorted here, by code point, as orjson sorts them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson
import polars as pl
from polars_hash import CryptographicHashingNameSpace

__all__ = [
    "JsonKind",
    "canonical_json",
    "contact_hash",
    "event_key",
    "event_keys",
    "hash_event_keys",
    "json_member",
    "json_members",
    "json_nested",
    "json_object",
    "json_value",
    "legacy_event_key",
    "legacy_event_keys",
    "merged_json",
    "payload_hash",
    "payload_hashes",
]

CONTACT_SCHEME = "c1"
EVENT_SCHEME = "ls2"
LEGACY_EVENT_SCHEME = "ls1"


def canonical_json(value: Any) -> bytes:
    """Keys sorted, no spaces, UTF-8; NaN and infinities refused (orjson would write null)."""
    _refuse_non_finite(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def merged_json(*bodies: bytes) -> bytes:
    """One canonical object from canonical JSON objects, the later keys winning. The parts
    came from `canonical_json` (or its column form), so nothing in them can be non-finite:
    unlike `canonical_json`, this does not walk the values, a cost paid once per folded request."""
    merged: dict[str, Any] = {}
    for body in bodies:
        merged |= orjson.loads(body)
    return orjson.dumps(merged, option=orjson.OPT_SORT_KEYS)


def payload_hash(body: bytes) -> str:
    """The hash of a request body that is already canonical JSON."""
    return f"{CONTACT_SCHEME}:{hashlib.sha256(body).hexdigest()}"


def contact_hash(payload: Mapping[str, Any]) -> str:
    return payload_hash(canonical_json(payload))


def event_key(
    sync_name: str, event_name: str, identifier: str, once_per: Mapping[str, str] | None = None
) -> str:
    """An occurrence's key by one identifier (`e:<email>` or `u:<userId>`): 'ls2-' and 64 hex
    digits, 68 characters (Loops allows 100). `once_per`: column name to canonical text."""
    material = canonical_json([EVENT_SCHEME, sync_name, event_name, identifier, once_per or {}])
    return f"{EVENT_SCHEME}-{hashlib.sha256(material).hexdigest()}"


def legacy_event_key(
    sync_name: str, event_name: str, identity: str, once_per: Sequence[Any] = ()
) -> str:
    """The `ls1` key of ledgers written before `ls2`: one identity, `once_per` values only."""
    material = canonical_json(
        [LEGACY_EVENT_SCHEME, sync_name, event_name, identity, list(once_per)]
    )
    return f"{LEGACY_EVENT_SCHEME}-{hashlib.sha256(material).hexdigest()}"


def _refuse_non_finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} has no JSON form")
    if isinstance(value, Mapping):
        for item in value.values():
            _refuse_non_finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_non_finite(item)


# --- the same, a column at a time ---------------------------------------------------------------


JsonKind = Literal["string", "number", "integer", "boolean"]

# What orjson (and so Polars' JSON writer) escapes in a string, and how: '"', '\\' and the C0
# controls, as \" \\ \b \t \n \f \r or \u00XX. Every other character is written as itself.
_ESCAPED = [chr(code) for code in range(0x20)] + ['"', "\\"]
_ESCAPES = [orjson.dumps(char).decode()[1:-1] for char in _ESCAPED]


def json_value(value: pl.Expr, *, number: bool = False) -> pl.Expr:
    """Each value's JSON text ('null' for a null), whatever its type. A `number` (a Float64
    column) that is whole is written as an integer (5, not 5.0), so it hashes the same from
    text, an int or a float."""
    if not number:
        return _encoded(value)
    whole = value.is_finite() & (value == value.floor()) & (value.abs() < 2**53)
    return pl.when(whole).then(_encoded(value.cast(pl.Int64))).otherwise(_encoded(value))


def _encoded(value: pl.Expr) -> pl.Expr:
    # Polars writes JSON for structs only: wrap the value in one, then unwrap the text.
    text = pl.struct(value.alias("v")).struct.json_encode()
    return text.str.strip_prefix('{"v":').str.strip_suffix("}")


def json_member(key: str, value: pl.Expr, kind: JsonKind, *, null: bool = False) -> pl.Expr:
    """'"key":' and the value's JSON text, as `json_value` writes it, per row; null where the
    value is null, or with `null` '"key":null'.

    Written for a value of a known type, in one pass where `json_value` takes three: text (a
    String) escaped as orjson escapes it, an integer or a boolean as its plain text, a Float64
    `number` as `json_value(number=True)` writes it.
    """
    name = orjson.dumps(key).decode() + ":"
    if kind == "string":
        member = pl.concat_str([pl.lit(name + '"'), _escaped(value), pl.lit('"')])
    elif kind == "number":
        whole = value.is_finite() & (value == value.floor()) & (value.abs() < 2**53)
        as_integer = pl.when(whole).then(value).cast(pl.Int64).cast(pl.String)
        text = pl.coalesce(as_integer, pl.when(~whole).then(_encoded(value)))
        member = pl.concat_str([pl.lit(name), text])
    else:
        member = pl.concat_str([pl.lit(name), value.cast(pl.String)])
    return pl.coalesce(member, pl.lit(name + "null")) if null else member


def _escaped(text: pl.Expr) -> pl.Expr:
    return text.str.replace_many(_ESCAPED, _ESCAPES)


def json_members(members: Mapping[str, pl.Expr | None]) -> pl.Expr:
    """A JSON object per row of `json_member`s, by key, sorted; a null member is left out, and
    so is a `None` in `members`."""
    present = [member for _, member in sorted(members.items()) if member is not None]
    if not present:
        return pl.lit("{}")
    listed = pl.concat_str(present, separator=",", ignore_nulls=True)
    return pl.concat_str([pl.lit("{"), listed, pl.lit("}")])


def json_nested(key: str, members: Mapping[str, pl.Expr | None]) -> pl.Expr:
    """'"key":' and an object of `json_member`s (see `json_members`), per row; null, so left
    out of the object around it, where no member is there."""
    present = [member for _, member in sorted(members.items()) if member is not None]
    if not present:
        return pl.lit(None, dtype=pl.String)
    listed = pl.concat_str(present, separator=",", ignore_nulls=True).replace("", None)
    return pl.concat_str([pl.lit(orjson.dumps(key).decode() + ":{"), listed, pl.lit("}")])


def json_object(entries: Mapping[str, pl.Expr | None]) -> pl.Expr:
    """A JSON object per row, keys sorted; an entry whose expression gives null is left out.

    Each entry is the JSON text of its value (from `json_value`, a nested `json_object`, or a
    literal); `None` in `entries` is an entry that is never there.
    """
    return json_members(
        {
            key: None if text is None else pl.lit(orjson.dumps(key).decode() + ":") + text
            for key, text in entries.items()
        }
    )


def payload_hashes(bodies: pl.Expr) -> pl.Expr:
    """`payload_hash` of each body (canonical JSON text); null stays null."""
    return _sha256_hex(bodies, f"{CONTACT_SCHEME}:")


def _sha256_hex(texts: pl.Expr, prefix: str) -> pl.Expr:
    """`prefix` and the sha256 of each text's UTF-8 bytes in lower-case hex, as hashlib's
    `hexdigest()` writes it; null for a null."""
    return pl.lit(prefix) + CryptographicHashingNameSpace(texts).sha2_256()


def event_keys(
    sync_name: str, event_name: str, identifiers: pl.Expr, once_per: Mapping[str, pl.Expr]
) -> pl.Expr:
    """The canonical JSON that `event_key` hashes, per row (hash it with `hash_event_keys`);
    null where the identifier is null. `once_per` values: text, not null."""
    head = orjson.dumps([EVENT_SCHEME, sync_name, event_name]).decode()[:-1]
    values = json_members(
        {name: json_member(name, value, "string", null=True) for name, value in once_per.items()}
    )
    parts = [pl.lit(head + ',"'), _escaped(identifiers), pl.lit('",'), values, pl.lit("]")]
    return pl.concat_str(parts)


def legacy_event_keys(
    sync_name: str, event_name: str, identities: pl.Expr, once_per: list[pl.Expr]
) -> pl.Expr:
    """The canonical JSON that `legacy_event_key` hashes, per row."""
    head = orjson.dumps([LEGACY_EVENT_SCHEME, sync_name, event_name]).decode()[:-1]
    values = [json_value(value) for value in once_per]
    listed = pl.concat_str(values, separator=",") if values else pl.lit("")
    return pl.lit(head + ",") + _encoded(identities) + pl.lit(",[") + listed + pl.lit("]]")


def hash_event_keys(materials: pl.Expr, *, scheme: str = EVENT_SCHEME) -> pl.Expr:
    """`event_key` (or, with `scheme="ls1"`, `legacy_event_key`) of each material from
    `event_keys` (`legacy_event_keys`); null stays null."""
    return _sha256_hex(materials, f"{scheme}-")
