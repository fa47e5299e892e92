"""`run --baseline`: adopt an audience Loops already has, by recording the plan as delivered.

A team that synced by hand, with another tool, or under a ledger now lost, would have a first
run send every contact and every event again (duplicate emails). A baseline run plans as a run
does, under the sync's lock and with a run record, then writes each planned upsert and event to
the ledger as the recorder writes what Loops confirmed (`sync.delivery.record_delivered`),
sending nothing: the next run sends only what changes after it.
"""

from __future__ import annotations

from collections.abc import Iterator

from sync.delivery import record_delivered
from sync.ledger import Ledger
from sync.model import Request
from sync.plan import Plan
from sync.report import Baseline

__all__ = ["record_plan"]


def record_plan(plan: Plan, ledger: Ledger) -> Baseline:
    """Record every request of `plan` as delivered, a job at a time; returns the counts."""
    contacts = events = 0
    with ledger.events_batched():  # nothing is sent: no email hangs on a commit per event
        for job in plan.jobs():
            for request in job.requests:
                if request.kind == "removal":  # a departed contact is adopted as it is in Loops
                    continue
                for each in _unfolded(request):
                    record_delivered(ledger, each)
                    contacts += each.kind == "contact"
                    events += each.kind == "event"
    return Baseline(contacts, events)


def _unfolded(request: Request) -> Iterator[Request]:
    """An event carrying its contact's upsert stands for both: the upsert first, as the sender
    reports a delivered carrier."""
    if request.folded is not None:
        yield request.folded
    yield request
