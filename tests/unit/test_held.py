"""`Held` answers as plain set lookups would, though it keeps fingerprints, not the texts."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.held import ContactRows, Fingerprints, Held, fingerprints


def digest(seed: int) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()


def near_misses(text: str) -> list[str]:
    """Texts a fingerprint taken carelessly would confuse with `text`."""
    head, hexes = text[:-64], text[-64:]
    other = digest(len(text) + ord(hexes[0]))
    return [
        text.upper(),  # the same digits, other case
        head + hexes[:32] + other[:32],  # the same first 128 bits
        head + hexes[:16] + other[:48],  # the same first 64 bits
        {"c1:": "ls2-", "ls2-": "ls1-", "ls1-": "c1:"}.get(head, "c1:") + hexes,  # other scheme
        text + "x",
        text[:-1],
        hexes,
    ]


def texts(scheme: str) -> st.SearchStrategy[str]:
    """Payload hashes or event keys as loops-sync writes them, their near misses, and any text
    (a ledger written by hand, a test's `c1:aaa`)."""
    written = st.integers(0, 40).map(lambda n: scheme + digest(n))
    missed = written.flatmap(lambda text: st.sampled_from(near_misses(text)))
    return st.one_of(written, missed, st.text(max_size=8), st.sampled_from(["", "c1:aaa", "ls2-x"]))


HASHES = texts("c1:")
KEYS = st.one_of(texts("ls2-"), texts("ls1-"))
IDENTITIES = st.sampled_from(["e:a@x.io", "e:b@x.io", "u:1", "u:2", "e:c@x.io"])
PROPS = st.sampled_from([None, ",email,", ",email,plan,"])


def asked(values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str | None]]:
    return st.lists(st.one_of(values, st.none()), max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    contacts=st.lists(st.tuples(IDENTITIES, HASHES, PROPS), max_size=12, unique_by=lambda c: c[0]),
    keys=st.lists(KEYS, max_size=20),
    failures=st.lists(st.one_of(IDENTITIES, KEYS), max_size=5),
    hashes=asked(HASHES),
    identities=asked(IDENTITIES),
    by_email=asked(KEYS),
    by_user=asked(KEYS),
    legacy=asked(KEYS),
)
def test_held_answers_as_a_set_lookup(
    *,
    contacts: list[tuple[str, str, str | None]],
    keys: list[str],
    failures: list[str],
    hashes: list[str | None],
    identities: list[str | None],
    by_email: list[str | None],
    by_user: list[str | None],
    legacy: list[str | None],
) -> None:
    held = Held.of_rows(contacts, keys, failures)
    held_hashes = {h for _, h, _ in contacts}
    known = {identity for identity, _, _ in contacts}

    def answers(values: list[str | None], among: set[str]) -> list[bool]:
        return [value is not None and value in among for value in values]

    assert held.holds_payloads(pl.Series(hashes, dtype=pl.String)).to_list() == answers(
        hashes, held_hashes
    )
    mask = held.knows_contacts(pl.Series(identities, dtype=pl.String))
    assert mask.to_list() == answers(identities, known)
    assert held.failed(pl.Series(identities, dtype=pl.String)).to_list() == answers(
        identities, set(failures)
    )
    assert held.legacy == any(key.startswith("ls1-") for key in keys)

    size = min(len(by_email), len(by_user), len(legacy))
    occurrences = pl.DataFrame(
        {
            "x.key_email": by_email[:size],
            "x.key_user": by_user[:size],
            "x.legacy": legacy[:size],
        },
        schema=dict.fromkeys(("x.key_email", "x.key_user", "x.legacy"), pl.String),
    )
    found_by_email, found_by_user = held.event_matches(occurrences, "x.")
    expected_by_user = answers(by_user[:size], set(keys))
    if held.legacy:
        by_ls1 = answers(legacy[:size], set(keys))
        expected_by_user = [u or old for u, old in zip(expected_by_user, by_ls1, strict=True)]
    assert found_by_email.to_list() == answers(by_email[:size], set(keys))
    assert found_by_user.to_list() == expected_by_user
    assert held.holds_event(occurrences, "x.").to_list() == [
        e or u for e, u in zip(found_by_email.to_list(), expected_by_user, strict=True)
    ]

    props = held.props_of(pl.Series(identities, dtype=pl.String))
    expected = {(i, p) for i, _, p in contacts if p is not None and i in identities}
    assert set(props.iter_rows()) == expected

    full = held.without_contacts()  # --full: contacts unsent, events still delivered
    assert not full.holds_payloads(pl.Series(hashes, dtype=pl.String)).any()
    assert not full.knows_contacts(pl.Series(identities, dtype=pl.String)).any()
    assert full.props_of(pl.Series(identities, dtype=pl.String)).is_empty()
    assert full.event_matches(occurrences, "x.")[0].to_list() == found_by_email.to_list()


def test_values_sharing_the_first_64_bits_and_a_bucket_are_told_apart() -> None:
    """Many held values in one bucket, some with the same `hi`: each is found, none confused."""
    shared = "0" * 12  # one bucket at any size below 2^48 values
    held = [f"ls2-{shared}{digest(n)[:52]}" for n in range(200)]
    same_hi = [f"ls2-{shared}{held[0][16:20]}{digest(n)[:48]}" for n in range(1000, 1050)]
    values = Fingerprints.of([pl.Series(held[:100]), pl.Series(same_hi[:25])])
    asked = pl.Series([*held, *same_hi, None])
    found = values.mask(asked).to_list()
    assert found == [True] * 100 + [False] * 100 + [True] * 25 + [False] * 25 + [False]


def test_fingerprints_take_the_digest_and_hash_the_whole_text() -> None:
    hexes = digest(1)
    prints = fingerprints(pl.Series([f"c1:{hexes}", f"ls2-{hexes}", "c1:aaa", None]))
    hi, lo = prints.get_column("hi").to_list(), prints.get_column("lo").to_list()
    assert hi[0] == hi[1] == int(hexes[:16], 16)  # the digest's first 64 bits
    assert lo[0] != lo[1]  # but not the same text
    assert hi[2] is not None
    assert (hi[3], lo[3]) == (None, None)


def test_an_empty_set_holds_nothing_and_a_batch_may_be_empty() -> None:
    assert not Fingerprints.of([]).mask(pl.Series(["c1:aaa", None])).any()
    values = Fingerprints.of([pl.Series([], dtype=pl.String), pl.Series(["a"]), pl.Series([None])])
    assert len(values) == 1
    assert values.mask(pl.Series(["a", "b"])).to_list() == [True, False]
    assert Held.nothing().holds_payloads(pl.Series([], dtype=pl.String)).is_empty()


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 17, 1000])
def test_every_held_value_is_found_whatever_the_size(size: int) -> None:
    """The bucket index grows with the set: at each size, held values and others."""
    held = [f"c1:{digest(n)}" for n in range(size)]
    others = [f"c1:{digest(-n - 1)}" for n in range(size)]
    values = Fingerprints.of([pl.Series(held)])
    assert values.mask(pl.Series(held + others)).to_list() == [True] * size + [False] * size


def test_props_of_rows_in_memory() -> None:
    lookup = ContactRows(pl.DataFrame({"identity": ["e:a", "e:b"], "props": [",email,", None]}))
    asked = pl.Series(["e:a", "e:b", "e:c", None])
    assert lookup.known(asked).to_list() == [True, True, False, False]
    assert lookup.props(asked).rows() == [("e:a", ",email,")]
