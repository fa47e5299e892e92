"""Planning reads the ledger's large sets a page at a time (`sync.snapshot`): every row once,
pages bounded, and contacts in the same order whichever database keeps the ledger."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from sync import snapshot
from sync.ledger import Ledger
from sync.ledger_db import PgState, open_db
from sync.model import Occurrence
from tests.ledger_backends import Place, place, places

__all__ = ["place", "places"]  # the fixtures: every test runs on both backends

# Identities whose order differs bytewise and in a language's collation: upper before lower
# case, accented letters after every ASCII one, letters of other scripts, a character outside
# the Basic Multilingual Plane (four bytes in UTF-8), a userId.
IDENTITIES = [
    "e:zoe@x.io",
    "e:Zed@x.io",
    "e:zoë@x.io",
    "e:émile@x.io",
    "e:eve@x.io",
    "e:straße@x.de",
    "e:strasse@x.de",
    "e:日本@x.jp",
    "e:😀@x.io",
    "e:ꙮ@x.io",
    "u:10",
    "u:9",
]


def digest_text(scheme: str, seed: int) -> str:
    return scheme + hashlib.sha256(str(seed).encode()).hexdigest()


def test_each_row_is_read_once_a_bounded_page_at_a_time(place: Place) -> None:
    """SQLite reads a range of keys a page, ended where the key reaches the page's last row:
    rows sharing that value (userId keys of several occurrences) end the same page. PostgreSQL
    reads the table in one pass, PAGE_ROWS rows a page. Either way every row is read once."""
    ledger = Ledger(place, "t")
    user_keys = [digest_text("ls2-", n // 3) for n in range(7)]  # three occurrences per key
    for n, shared in enumerate(user_keys):
        found_by = Occurrence(key_user=shared)
        ledger.event_delivered(digest_text("ls1-", n), f"u:{n}", "signup", found_by)
    db = open_db(place)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(snapshot, "PAGE_ROWS", 2)
        pages = list(snapshot.values_in_pages(db, "t", snapshot.USER_KEYS))
        keys = list(snapshot.values_in_pages(db, "t", snapshot.EVENT_KEYS))
    db.close()
    ledger.close()
    in_key_ranges = not isinstance(place, PgState)
    assert [page.len() for page in pages] == ([3, 3, 1] if in_key_ranges else [2, 2, 2, 1])
    assert [page.len() for page in keys] == [2, 2, 2, 1]
    assert sorted(pl.concat(pages)) == sorted(user_keys)
    assert sorted(pl.concat(keys)) == sorted(digest_text("ls1-", n) for n in range(7))


@pytest.mark.parametrize("page_rows", [1, 2, 3, 5, 100])
def test_present_contacts_come_in_bytewise_order_and_none_is_lost(
    place: Place, page_rows: int
) -> None:
    """The contacts still present (not removed) come in the order of their identities' bytes
    (UTF-8: code points), the order departures keeps the first of, on both databases; a page
    ends anywhere among them and none is lost or read twice; a removed one is left out."""
    ledger = Ledger(place, "t")
    other = Ledger(place, "other")
    for identity in IDENTITIES:
        ledger.contact_delivered(identity, digest_text("c1:", len(identity)))
        other.contact_delivered(identity + "-other", digest_text("c1:", 0))
    ledger.contact_delivered("e:gone@x.io", digest_text("c1:", 1))
    ledger.contact_removed("e:gone@x.io", "unsubscribe")
    ledger.flush()
    other.close()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(snapshot, "PAGE_ROWS", page_rows)
        pages = list(ledger.held().contacts.present())
    ledger.close()
    assert all(page.len() <= page_rows for page in pages)
    assert pl.concat(pages).to_list() == sorted(IDENTITIES, key=str.encode)
