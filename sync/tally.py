"""The run report's figures from planning: what the plan holds, counted in the report's words.

Planning (`sync.plan`) hands over its counts, side effects and departures; these put them in
the `RunReport` that the summary, the JSON report and `history` read.
"""

from __future__ import annotations

from sync.departures import Departures
from sync.plan import Gathered, Plan
from sync.report import RunReport
from sync.side_effects import SideEffects

__all__ = ["count_left_by_limit", "count_mapped"]


def count_mapped(report: RunReport, gathered: Gathered, plan: Plan) -> None:
    report.rows_read = gathered.rows_read
    report.rows_rejected = gathered.rejects.height
    report.duplicates = gathered.duplicates
    count_plan(report, plan)
    report.kept_in_loops = plan.kept_in_loops
    report.side_effects = plan.side_effects
    if plan.departures is not None:
        count_departures(report, plan.departures)
    report.warnings.extend(gathered.warnings)
    if plan.kept_in_loops:
        each = ", ".join(f"{name} ({count})" for name, count in plan.kept_in_loops.items())
        report.warnings.append(
            f"empty in the source but sent before, so Loops keeps the old value: {each} "
            "contacts; set `empty: clear` under contact to clear such values"
        )


def count_departures(report: RunReport, departures: Departures) -> None:
    removed = len(departures.removals)
    examples = {"contacts_removed": departures.examples} if removed else {}
    report.side_effects += SideEffects(
        contacts_removed=removed, removal=departures.action, examples=examples
    )
    if departures.held_back:
        report.removals_held_back = departures.held_back
        report.warnings.append(f"no contact removed: {departures.held_back}")


def count_plan(report: RunReport, plan: Plan) -> None:
    counts = plan.counts
    report.contacts_new = counts["contacts_new"]
    report.contacts_changed = counts["contacts_changed"]
    report.contacts_unchanged = counts["contacts_unchanged"]
    report.contacts_retry = counts["contacts_retry"]
    report.events_new = counts["events_new"]
    report.events_retry = counts["events_retry"]
    report.events_already_delivered = counts["events_already_delivered"]
    report.requests_planned = plan.request_count


def count_left_by_limit(report: RunReport, plan: Plan, limit: int | None) -> None:
    """What --limit kept back: the requests (an upsert riding on an event is one, as Loops sees
    it) and the contacts of the jobs past the first `limit` (a job is one contact's)."""
    if limit is None:
        return
    handed_requests = handed_jobs = 0
    for job in plan.jobs(limit):
        handed_requests += len(job.requests)
        handed_jobs += 1
    report.requests_left_by_limit = plan.request_count - handed_requests
    report.contacts_left_by_limit = plan.job_count - handed_jobs
