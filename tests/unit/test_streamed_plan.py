"""A plan built in bounded memory sends exactly what a plan built in memory at once sends.

The streamed plan reads the source in slices, settles them and keeps the pending rows on disk
in runs sorted by the buckets of their identities, deduplicates on a census grouped a partition
at a time, and plans a part of the buckets at a time, each part ordered alone and merged back as
the jobs are read. With slices, partitions, runs and parts of a few rows, every boundary falls
somewhere in a small random source: rows of one contact in different slices and runs, conflicts
across slices, identities in different parts.
"""

from __future__ import annotations

import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import candidates, dedupe
from sync.candidates import map_rows
from sync.columns import ROW
from sync.config_model import SyncConfig
from sync.ledger import Ledger
from sync.mapping import map_slices
from sync.model import Job
from sync.plan import Plan, make_plan, plan_slices

SPEC = SyncConfig.model_validate(
    {
        "name": "t",
        "source": {"csv": "x.csv"},
        "contact": {
            "email": "email",
            "user_id": "uid",
            "properties": {"plan": "plan"},
        },
        "events": [
            {"name": "signup", "email": "email", "user_id": "uid"},
            {"name": "upgrade", "email": "email", "when": "plan = 'pro'", "once_per": ["plan"]},
        ],
    }
)
ROWS = st.lists(
    st.tuples(
        st.sampled_from(["a@x.io", "b@x.io", "c@x.io", "d@x.io", None, "not an email"]),
        st.sampled_from([None, None, "1", "2", "3"]),
        st.sampled_from(["free", "pro", None]),
    ),
    max_size=30,
)


def frame_of(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    frame = pl.DataFrame(
        rows, schema={"email": pl.String, "uid": pl.String, "plan": pl.String}, orient="row"
    )
    return frame.with_row_index(ROW, offset=1)


def sent(built: Plan) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Every job as the sender gets it: identity, then each request's kind, row, ref and body,
    and the upsert folded into it."""

    def request_line(job: Job) -> list[tuple[Any, ...]]:
        return [
            (r.kind, r.row, r.ref, r.body, r.folded.ref if r.folded else None) for r in job.requests
        ]

    return [(job.identity, request_line(job)) for job in built.jobs()]


def deliver(ledger: Ledger, built: Plan, failing: int) -> None:
    """Record the plan as delivered, except every `failing`th request, recorded as failed."""
    for index, (kind, identity, ref, event) in enumerate(
        built.requests.select("kind", "identity", "ref", "event").iter_rows()
    ):
        if failing and index % failing == 0:
            ledger.request_failed(kind, identity if kind == "contact" else ref, "HTTP 500")
        elif kind == "contact":
            ledger.contact_delivered(identity, ref)
        else:
            ledger.event_delivered(ref, identity, event)
    ledger.flush()


# Rows per slice, per partition of the census, per run of pending rows, lines per part of the
# plan.
BOUNDARIES = st.tuples(st.integers(1, 7), st.integers(1, 5), st.integers(1, 9), st.integers(1, 6))


@settings(max_examples=50, deadline=None)
@given(
    before=ROWS,
    now=ROWS,
    failing=st.sampled_from([0, 2, 3]),
    full=st.booleans(),
    boundaries=BOUNDARIES,
)
def test_the_streamed_plan_equals_the_plan_made_in_memory(
    before: list[tuple[Any, ...]],
    now: list[tuple[Any, ...]],
    failing: int,
    full: bool,
    boundaries: tuple[int, int, int, int],
) -> None:
    slice_rows, partition_rows, run_rows, part_lines = boundaries
    with tempfile.TemporaryDirectory() as work, pytest.MonkeyPatch.context() as patch:
        ledger = Ledger(Path(work) / "ledger.sqlite", "t")
        earlier = map_rows(SPEC, frame_of(before), held=ledger.held())
        deliver(ledger, make_plan(earlier, ledger.held()), failing)
        held = ledger.held()

        source = frame_of(now)
        whole = map_rows(SPEC, source, held=held.without_contacts() if full else held)
        reference = make_plan(whole, held, full=full)

        patch.setattr(dedupe, "PARTITION_ROWS", partition_rows)
        patch.setattr(candidates, "RUN_ROWS", run_rows)
        patch.setattr(candidates, "CENSUS_FILE_ROWS", run_rows)
        patch.setattr(candidates, "LINES_PER_PART", part_lines)
        spool = Path(work) / "spool"
        spool.mkdir()
        slices = map_slices(SPEC, source.iter_slices(slice_rows), source.schema)
        found, streamed = plan_slices(SPEC, slices, held, full=full, spool=spool)
        whole_slices = map_slices(SPEC, [source], source.schema)
        in_memory, _ = plan_slices(SPEC, whole_slices, held, full=full, spool=None)

        assert sent(streamed) == sent(reference)
        assert streamed.requests.rows() == reference.requests.rows()
        assert streamed.counts == reference.counts
        assert streamed.side_effects == reference.side_effects
        assert (streamed.size, streamed.job_count) == (reference.size, len(sent(reference)))
        assert found.rejects.rows() == whole.rejects.rows()
        assert found.duplicates == whole.duplicates
        assert found.warnings == in_memory.warnings  # the same examples, the first by row
        assert found.rows_read == whole.rows_read == len(now)
        ledger.close()


def test_a_plan_in_many_parts_keeps_each_contact_whole_and_the_source_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts are ordered alone and merged: jobs still come in the order of their contact's
    first row, each contact's upsert before its events."""
    monkeypatch.setattr(candidates, "LINES_PER_PART", 2)
    rows = [(f"p{i}@x.io", None, "pro" if i % 2 else "free") for i in range(12)]
    rows.append(("p0@x.io", None, "pro"))  # p0's second row wins: its events come with it
    source = frame_of(rows)
    slices = map_slices(SPEC, source.iter_slices(5), source.schema)
    with closing(Ledger(tmp_path / "ledger.sqlite", "t")) as ledger:
        _, streamed = plan_slices(SPEC, slices, ledger.held(), spool=tmp_path)
    assert len(streamed.parts) > 1
    jobs = sent(streamed)
    assert [identity for identity, _ in jobs] == [f"e:p{i}@x.io" for i in range(1, 12)] + [
        "e:p0@x.io"
    ]
    for _, requests in jobs:
        kinds = [kind for kind, *_ in requests]
        assert kinds == sorted(kinds, key=lambda kind: kind != "contact")


def test_events_alone_after_a_job_that_carries_its_upsert_are_sent_as_they_are(
    tmp_path: Path,
) -> None:
    """b's upsert rides on its upgrade; a's contact is unchanged and its two events are retried
    after failing: each is its own request (neither is taken for an upsert to carry)."""
    ledger = Ledger(tmp_path / "ledger.sqlite", "t")
    before = frame_of([("b@x.io", None, "free"), ("a@x.io", None, "pro")])
    first = make_plan(map_rows(SPEC, before, held=ledger.held()), ledger.held())
    for kind, identity, ref, event in first.requests.select(
        "kind", "identity", "ref", "event"
    ).iter_rows():
        if kind == "event" and identity == "e:a@x.io":
            ledger.request_failed("event", ref, "HTTP 500")
        elif kind == "contact":
            ledger.contact_delivered(identity, ref)
        else:
            ledger.event_delivered(ref, identity, event)
    ledger.flush()

    now = frame_of([("b@x.io", None, "pro"), ("a@x.io", None, "pro")])
    jobs = [
        (job.identity, [(r.kind, r.event, r.folded is not None) for r in job.requests])
        for job in make_plan(map_rows(SPEC, now, held=ledger.held()), ledger.held()).jobs()
    ]
    assert jobs == [
        ("e:b@x.io", [("event", "upgrade", True)]),
        ("e:a@x.io", [("event", "signup", False), ("event", "upgrade", False)]),
    ]


EVENTS_ALONE = SyncConfig.model_validate(
    {
        "name": "t",
        "source": {"csv": "x.csv"},
        "events": [
            {"name": "signup", "email": "email"},
            {"name": "referral", "email": "referrer", "properties": {"referred": "email"}},
        ],
    }
)
REFERRALS = st.lists(
    st.tuples(
        st.sampled_from(["a@x.io", "b@x.io", "c@x.io", None, "not an email"]),
        st.sampled_from(["a@x.io", "d@x.io", "e@x.io", None, "bad"]),
    ),
    max_size=30,
)


@settings(max_examples=30, deadline=None)
@given(now=REFERRALS, boundaries=BOUNDARIES)
def test_a_row_whose_events_go_to_different_contacts_is_planned_once_in_each_of_their_parts(
    now: list[tuple[Any, ...]], boundaries: tuple[int, int, int, int]
) -> None:
    """Without a contact, a row's events go with their own identities: its signup with the
    person, its referral with the referrer, in different parts. The row is kept in both;
    each part plans only its own requests, and the row's rejects are counted once."""
    slice_rows, partition_rows, run_rows, part_lines = boundaries
    source = pl.DataFrame(
        now, schema={"email": pl.String, "referrer": pl.String}, orient="row"
    ).with_row_index(ROW, offset=1)
    with tempfile.TemporaryDirectory() as work, pytest.MonkeyPatch.context() as patch:
        ledger = Ledger(Path(work) / "ledger.sqlite", "t")
        whole = map_rows(EVENTS_ALONE, source, held=ledger.held())
        reference = make_plan(whole, ledger.held())

        patch.setattr(dedupe, "PARTITION_ROWS", partition_rows)
        patch.setattr(candidates, "RUN_ROWS", run_rows)
        patch.setattr(candidates, "CENSUS_FILE_ROWS", run_rows)
        patch.setattr(candidates, "LINES_PER_PART", part_lines)
        slices = map_slices(EVENTS_ALONE, source.iter_slices(slice_rows), source.schema)
        found, streamed = plan_slices(EVENTS_ALONE, slices, ledger.held(), spool=Path(work))

        assert sent(streamed) == sent(reference)
        assert streamed.counts == reference.counts
        assert found.rejects.rows() == whole.rejects.rows()
        ledger.close()
