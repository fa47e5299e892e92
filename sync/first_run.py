"""A sync's first run in a state is never silent: a lost or misplaced ledger sends everything.

A ledger that holds nothing of a sync (no contact, no event, no run) makes its next run send
every contact and every event again: right for a sync that never ran, duplicate emails to real
people for one whose ledger was lost (an ephemeral runner, a new `state:`), or whose `name:`
changed. The plan, a dry run and a run say so before anything is sent, with the counts and
where the state is, so that a person can stop and adopt the audience instead
(`run --baseline`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sync.ledger import Ledger
from sync.report import RunReport

__all__ = ["FreshLedger", "fresh_ledger", "warn_first_run"]


@dataclass(frozen=True)
class FreshLedger:
    """A ledger that holds nothing of `sync`, and the syncs it does hold."""

    sync: str
    where: str  # the SQLite file, or the PostgreSQL URL without its password
    others: tuple[str, ...]

    def notice(self, report: RunReport) -> str:
        """The warning, from the planned counts of `report`."""
        contacts = report.contacts_new + report.contacts_changed + report.contacts_retry
        events = report.events_new + report.events_retry
        said = (
            f"first run of sync `{self.sync}` in this state ({self.where}): {contacts:,} "
            f"contacts and {events:,} events will be sent"
        )
        if self.others:
            names = ", ".join(f"`{name}`" for name in self.others)
            return (
                f"{said}. This state holds other syncs ({names}) but none named `{self.sync}`: "
                "did the sync's name change? every event would be sent again"
            )
        return (
            f"{said}. If Loops already has them (synced by hand, by another tool, or under a "
            "ledger now lost), record them first with `loops-sync run CONFIG --baseline`"
        )


def fresh_ledger(ledger: Ledger) -> FreshLedger | None:
    """The ledger as a first run finds it, or None when it holds anything of the sync."""
    if ledger.holds_sync():
        return None
    others = tuple(name for name in ledger.syncs() if name != ledger.sync)
    return FreshLedger(ledger.sync, ledger.where, others)


def warn_first_run(
    fresh: FreshLedger | None, report: RunReport, tell: Callable[[str], None] | None = None
) -> None:
    """A fresh ledger's notice as the report's first warning, and to `tell` (a run's start)."""
    if fresh is None:
        return
    notice = fresh.notice(report)
    report.warnings.insert(0, notice)
    if tell is not None:
        tell(notice)
