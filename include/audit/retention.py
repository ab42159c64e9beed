"""Retention: drop event partitions older than the retention window, never before they are exported."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta

from . import lake as lk
from .exports import export_status
from .storage import Root

log = logging.getLogger(__name__)

DEFAULT_DAYS = 90


@dataclass
class RetentionResult:
    today: str
    days: int
    dropped: list[str] = field(default_factory=list)  # "YYYY-MM-DD/org"
    kept: dict[str, str] = field(default_factory=dict)  # "YYYY-MM-DD/org" -> why it was kept

    def as_dict(self) -> dict:
        return {"today": self.today, "days": self.days, "dropped": self.dropped, "kept": self.kept}


def expired_dates(dates: list[date], today: date, days: int) -> list[date]:
    """Partition dates with (today - date) > days."""
    return [d for d in dates if (today - d).days > days]


def retain(lake_url: str, export_url: str, today: date, days: int = DEFAULT_DAYS, force: bool = False,
           dry_run: bool = False) -> RetentionResult:
    """Drop every expired (date, organization) whose daily CSV is current; keep and report the rest."""
    lake, exports = Root.open(lake_url), Root.open(export_url)
    result = RetentionResult(today.isoformat(), days)
    drop = []
    for day, org in sorted(lk.partition_row_counts(lake)):
        if day not in expired_dates([day], today, days):
            continue
        key = f"{day.isoformat()}/{org}"
        status = "forced" if force else export_status(lake, exports, day, org)
        if status not in ("current", "forced"):
            result.kept[key] = f"daily export is {status}"
            continue
        drop.append((day, org))
        result.dropped.append(key)
    if not dry_run:
        lk.drop_partitions(lake, drop)
    if result.kept:
        log.warning("kept %d expired partitions whose daily export is missing or stale (export them, or use "
                    "--force), e.g. %s", len(result.kept), next(iter(result.kept)))
    return result


def cutoff(today: date, days: int = DEFAULT_DAYS) -> date:
    """The oldest event date that retention keeps."""
    return today - timedelta(days=days)
