"""Deterministic keys: the same input gives the same key on any machine, any day.

A contact's payload hash tells the ledger whether Loops already holds exactly this payload.
An event's key is its `Idempotency-Key`: it depends only on the sync, the event name, the
contact's identity and the `once_per` values, so editing an event's properties never re-sends it.
Each key starts with a kind and a scheme version, so a contact hash can never equal an event key
and the scheme can change on purpose. Polars' own hashes are not stable across versions: sha256.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

__all__ = ["canonical_json", "contact_hash", "event_key", "payload_hash"]

CONTACT_SCHEME = "c1"
EVENT_SCHEME = "ls1"


def canonical_json(value: Any) -> bytes:
    """Keys sorted, no spaces, UTF-8; NaN and infinities refused (orjson would write null)."""
    _refuse_non_finite(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def payload_hash(body: bytes) -> str:
    """The hash of a request body that is already canonical JSON."""
    return f"{CONTACT_SCHEME}:{hashlib.sha256(body).hexdigest()}"


def contact_hash(payload: Mapping[str, Any]) -> str:
    return payload_hash(canonical_json(payload))


def event_key(sync_name: str, event_name: str, identity: str, once_per: Sequence[Any] = ()) -> str:
    """The event's `Idempotency-Key`: 'ls1-' and 64 hex digits, 68 characters (Loops allows 100)."""
    material = canonical_json([EVENT_SCHEME, sync_name, event_name, identity, list(once_per)])
    return f"{EVENT_SCHEME}-{hashlib.sha256(material).hexdigest()}"


def _refuse_non_finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} has no JSON form")
    if isinstance(value, Mapping):
        for item in value.values():
            _refuse_non_finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_non_finite(item)
