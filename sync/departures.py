"""Contacts that left the source, and what `contact.removed` does about them, behind a brake.

A contact this sync delivered that no row of the source has any more has *departed*. By default
nothing happens to it (`keep`); a sync may instead unsubscribe it (`subscribed: false`), take it
off the mailing lists the config maps (`false` for each), or delete it (`POST
/v1/contacts/delete`). The removals go after the run's upserts and events, paced as they are.

A broken export looks exactly like a mass departure, so removals stop at a brake: nothing is
removed when the source read no rows, or when more contacts would go than allowed
(`contact.max_removed`, by default 5% of the contacts the ledger holds for the sync, at least
10), unless a person approves them (`run --allow-removals N`). The rest of the run goes on.

Which contacts departed is found on fingerprints, a page of the ledger at a time, against those
of every identity the source's rows name (valid or not, so that a row rejected for a bad cell
does not remove its contact).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from sync.config_model import ContactSection
from sync.dedupe import fingerprint
from sync.held import Held
from sync.keys import canonical_json
from sync.model import Job, Request

__all__ = ["Departures", "find_departures"]

SHARE_ALLOWED = 0.05
AT_LEAST_ALLOWED = 10
KEPT_AT_MOST = 1_000_000  # removals a run sends at most; the next run finds the rest
EXAMPLES = 3
VERBS = {
    "unsubscribe": "unsubscribed",
    "remove_from_lists": "taken off the mailing lists",
    "delete": "deleted",
}


@dataclass(frozen=True)
class Departures:
    """The contacts that left the source (`count`, a few `examples`), and the removals this
    run sends for them: none when the brake holds them back (`held_back` says why)."""

    action: str
    count: int
    removals: tuple[Request, ...]
    examples: tuple[str, ...]
    held_back: str | None = None

    def jobs(self) -> Iterator[Job]:
        for request in self.removals:
            yield Job(request.identity, (request,))

    @property
    def verb(self) -> str:
        return VERBS[self.action]


def find_departures(
    contact: ContactSection | None,
    held: Held,
    present: pl.DataFrame,
    *,
    rows_read: int,
    allow: int | None = None,
) -> Departures | None:
    """The departures of a run, or None when the sync keeps them (`removed: keep`).

    `present`: the fingerprints (id.1, id.2) of every contact identity the source's rows name;
    `allow`: the removals a person approved (`--allow-removals`), over the config's limit."""
    if contact is None or contact.removed == "keep":
        return None
    held_count, count = 0, 0
    departed: list[pl.Series] = []
    for page in held.contacts.present():
        held_count += page.len()
        gone = _departed(page, present)
        count += gone.len()
        if sum(s.len() for s in departed) < KEPT_AT_MOST:
            departed.append(gone)
    identities = pl.concat([pl.Series("identity", [], pl.String), *departed]).head(KEPT_AT_MOST)
    examples = tuple(identities.head(EXAMPLES).str.slice(2))
    why = _brake(contact, count, held_count, rows_read=rows_read, allow=allow)
    if why is not None:
        return Departures(contact.removed, count, (), examples, held_back=why)
    removals = tuple(_removal(contact, identity) for identity in identities)
    return Departures(contact.removed, count, removals, examples)


def _departed(page: pl.Series, present: pl.DataFrame) -> pl.Series:
    frame = pl.DataFrame({"identity": page}).with_columns(fingerprint(pl.col("identity"), "id"))
    return frame.join(present, on=["id.1", "id.2"], how="anti").get_column("identity")


def _brake(
    contact: ContactSection, count: int, held: int, *, rows_read: int, allow: int | None
) -> str | None:
    """Why nothing is removed this run, if so."""
    verb = VERBS[contact.removed]
    if count and rows_read == 0:
        return (
            f"the source read no rows: none of the {count} contacts this sync delivered is "
            f"{verb} (an empty or broken export looks like everyone leaving)"
        )
    limit = allowed(contact, held) if allow is None else allow
    if count <= limit:
        return None
    source = "--allow-removals" if allow is not None else _limit_source(contact)
    return (
        f"{count} contacts left the source, more than the {limit} that may be {verb} in a run "
        f"({source}): none is {verb}. If they did leave, approve them: "
        f"run --allow-removals {count}"
    )


def allowed(contact: ContactSection, held: int) -> int:
    """How many departed contacts a run removes without asking: `max_removed`, else 5% of
    the contacts the ledger holds for the sync, at least 10."""
    if contact.max_removed is not None:
        return contact.max_removed
    return max(AT_LEAST_ALLOWED, math.floor(held * SHARE_ALLOWED))


def _limit_source(contact: ContactSection) -> str:
    if contact.max_removed is not None:
        return "contact.max_removed"
    return "by default 5% of the contacts delivered, at least 10; contact.max_removed sets it"


def _removal(contact: ContactSection, identity: str) -> Request:
    """The request that removes a departed contact, found by the identifier it was sent with."""
    body: dict[str, object] = (
        {"email": identity[2:]} if identity.startswith("e:") else {"userId": identity[2:]}
    )
    if contact.removed == "unsubscribe":
        body["subscribed"] = False
    elif contact.removed == "remove_from_lists":
        body["mailingLists"] = dict.fromkeys(contact.mailing_lists, False)
    return Request("removal", 0, identity, contact.removed, canonical_json(body))
