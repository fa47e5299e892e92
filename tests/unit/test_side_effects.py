"""Side effects counted from the upserts a plan sends (tested end to end in
tests/e2e/test_side_effects.py): the counting itself, and how slices add up."""

from __future__ import annotations

import polars as pl

from sync.columns import ROW
from sync.side_effects import SideEffects, side_effects_of


def upserts(*bodies: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            ROW: list(range(len(bodies), 0, -1)),  # the last body is the first row
            "identity": [f"e:p{i}@x.io" for i in range(len(bodies), 0, -1)],
            "body": list(bodies),
        }
    )


def test_each_effect_is_counted_with_the_first_contacts_by_row() -> None:
    found = side_effects_of(
        upserts(
            '{"email":"p4@x.io","firstName":null,"subscribed":true}',
            '{"email":"p3@x.io","note":"\\"firstName\\":null","subscribed":false}',
            '{"company":null,"email":"p2@x.io","firstName":null}',
            '{"email":"p1@x.io","firstName":"Ada"}',
        ),
        pl.Series([True, False, True, True]),
        clearable=("firstName", "company"),
    )
    assert found == SideEffects(
        contacts_created=3,
        subscribed_true=1,
        subscribed_false=1,
        properties_cleared={"firstName": 2, "company": 1},
        examples={
            "contacts_created": ("p1@x.io", "p2@x.io", "p4@x.io"),
            "subscribed_true": ("p4@x.io",),
            "subscribed_false": ("p3@x.io",),
            "cleared:firstName": ("p2@x.io", "p4@x.io"),
            "cleared:company": ("p2@x.io",),
        },
    )


def test_a_null_is_a_clear_only_for_a_property_empty_clear_may_null() -> None:
    found = side_effects_of(
        upserts('{"email":"p1@x.io","firstName":null}'), pl.Series([False]), clearable=()
    )
    assert found == SideEffects()


def test_slices_add_up_and_keep_the_first_examples() -> None:
    first = SideEffects(
        contacts_created=2,
        properties_cleared={"plan": 1},
        examples={"contacts_created": ("a", "b"), "cleared:plan": ("a",)},
    )
    second = SideEffects(
        contacts_created=2,
        subscribed_true=1,
        properties_cleared={"plan": 2, "city": 1},
        examples={"contacts_created": ("c", "d"), "subscribed_true": ("c",)},
    )
    total = first + second
    assert total.contacts_created == 4
    assert total.properties_cleared == {"plan": 3, "city": 1}
    assert total.examples["contacts_created"] == ("a", "b", "c")
    assert total.to_json()["examples"] == {
        "contacts_created": ["a", "b", "c"],
        "properties_cleared": {"plan": ["a"]},
        "subscribed_true": ["c"],
    }
