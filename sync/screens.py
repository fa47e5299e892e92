"""What the commands besides `run` show a person: `plan`, `check`, `test` and `history`, as
lines of text (the CLI prints them; tests read them). A run's summary and progress are in
`sync.render`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from sync.check import CheckReport
from sync.config_tests import CasesReport
from sync.model import RunRecord
from sync.pipeline import PlanPreview
from sync.render import ROW_NOTE, duration, side_effect_lines

__all__ = ["cases_lines", "check_lines", "history_lines", "plan_lines"]


def plan_lines(preview: PlanPreview) -> list[str]:
    """`loops-sync plan`: counts, rejects by column and reason, requests and their time, side
    effects, warnings, sample payloads."""
    report = preview.report
    lines: list[str] = []
    lines.append(f"plan for sync '{report.sync}': {report.rows_read} rows read")
    lines.append(
        f"  contacts: {report.contacts_new} new, {report.contacts_changed} changed, "
        f"{report.contacts_unchanged} unchanged, {report.contacts_retry} to retry"
    )
    lines.append(
        f"  events:   {report.events_new} new, {report.events_retry} to retry, "
        f"{report.events_already_delivered} already delivered"
    )
    lines.append(f"  duplicate rows: {report.duplicates} (the last row of each identity wins)")
    lines.append(f"  rejected rows: {report.rows_rejected}")
    lines.extend(reject_lines(report.rejects, report.rejects_more))
    if report.rejects_file:
        lines.append(f"    rejects: {report.rejects_file} ({ROW_NOTE})")
    lines.append(
        f"  requests: {preview.plan.request_count}, about {duration(preview.eta_seconds)} "
        f"at {report.rate_limit:g} requests/s"
    )
    effects = side_effect_lines(report.side_effects)
    lines.append("  side effects in Loops:" + ("" if effects else " none (only values stored)"))
    for line in effects:
        lines.append(f"    {line}")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    for sample in preview.samples:
        lines.append("  sample: " + orjson.dumps(sample).decode())
    return lines


def history_lines(runs: list[RunRecord]) -> list[str]:
    """`loops-sync history`: a run a line, how it ended last."""
    lines: list[str] = []
    lines.append(
        f"{'started':<20} {'took':>11} {'requests':>9} {'unchanged':>10} "
        f"{'rejected':>9} {'failed':>7} {'removed':>8} {'exit':>5}  how it ended"
    )
    for record in runs:
        counts = record.counts
        figures: tuple[object, ...] = ("-",) * 5  # died: unknown
        if counts:
            rejected = counts.get("rows_rejected", 0) + counts.get("rejected_by_loops", 0)
            failed = counts.get("failed", 0)
            if "events_duplicate" not in counts:  # written before `failed` held the waiting
                failed += counts.get("deferred", 0)
            unchanged = counts.get("contacts_unchanged", 0)
            removed = counts.get("contacts_removed", 0)
            figures = (counts.get("requests", 0), unchanged, rejected, failed, removed)
        took = duration(record.ended_at - record.started_at) if record.ended_at else record.status
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))
        exit_code = "" if record.exit_code is None else str(record.exit_code)
        ended = (record.reason or record.status).splitlines()[0]
        lines.append(
            f"{when:<20} {took:>11} {figures[0]:>9} {figures[1]:>10} "
            f"{figures[2]:>9} {figures[3]:>7} {figures[4]:>8} {exit_code:>5}  {ended}"
        )
    return lines


def check_lines(report: CheckReport, file: Path) -> list[str]:
    """`loops-sync check`: each part's summary, the columns, then warnings and problems."""
    lines: list[str] = []
    lines.append(f"check of sync '{report.sync}' ({file})")
    for part, summary in (
        ("config", report.config),
        ("source", report.source),
        ("account", report.account),
        ("tests", report.tests),
    ):
        if summary:
            lines.append(f"  {part:<8} {summary}")
    if report.columns:
        lines.append("  columns, as the mapping reads them (first rows):")
        width = max(len(check.path) for check in report.columns)
        for check in report.columns:
            refused = f", {check.refused} refused" if check.refused else ""
            lines.append(
                f"    {check.path:<{width}}  '{check.column}' ({check.source_type}) as "
                f"{check.sent_as}: {check.filled} filled{refused}"
            )
    for kept in report.filters:
        lines.append(f"  filter   {kept}")
    for created in report.created:
        lines.append(f"  created in Loops: contact property '{created.name}' ({created.type})")
    for title, items in (("warning", report.warnings), ("problem", report.problems)):
        if items:
            lines.append(f"{len(items)} {title}{'' if len(items) == 1 else 's'}:")
            for item in items:
                lines.append(f"  - {item}")
    verdict = "all is well" if report.exit_code == 0 else "not ready to run"
    lines.append(f"{verdict} (exit code {report.exit_code})")
    return lines


def cases_lines(report: CasesReport, file: Path) -> list[str]:
    """`loops-sync test`: a case a line, each failure's differences under it."""
    lines: list[str] = []
    lines.append(f"tests of sync '{report.sync}' ({file})")
    for case in report.cases:
        if case.passed:
            lines.append(f"  pass  {case.name}")
            continue
        where = f"{case.path}, line {case.line}" if case.line else case.path
        lines.append(f"  FAIL  {case.name} ({where})")
        for difference in case.differences:
            lines.append(f"          {difference.subject}")
            for detail in difference.details:
                lines.append(f"            {detail}")
    count, failed = len(report.cases), len(report.failed)
    noun = "case" if count == 1 else "cases"
    verdict = f"{failed} of {count} {noun} failed" if failed else f"all {count} {noun} passed"
    lines.append(f"{verdict} (exit code {report.exit_code})")
    return lines


def reject_lines(groups: list[dict[str, Any]], more: int) -> list[str]:
    """A line per group of rejects (`reject_groups`), then how many groups are not shown."""
    lines: list[str] = []
    for group in groups:
        rows = ", ".join(str(row) for row in group["first_rows"])
        later = ", …" if group["count"] > len(group["first_rows"]) else ""
        others = group.get("other_values", 0)
        like = f", and {others:,} other values like it" if others else ""
        column = group["column"] or "-"
        lines.append(
            f"    {group['count']:>6}  {column}: {group['reason']}{like} (rows {rows}{later})"
        )
    if more:
        lines.append(f"    and {more:,} more kinds of reject: every row is in the rejects file")
    return lines
