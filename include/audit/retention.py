"""Retention: drop event partitions older than the retention window, never before they are archived.

A partition goes only when its date's latest archived version covers every row it holds (or with
``force``), and never while its organization is under a legal hold. Each run that drops
partitions first writes, per organization, a purge receipt into the organization's chain: which
dates, how many rows, and the SHA-256 of the manifest that proves each was archived. The rows
counted and checked are one table version's, and the delete commits only if no writer added
files to those partitions since; else the run checks again. A receipt records a drop about to
happen: the delete's commit metadata lists the receipts it carried out (a receipt it does not
list, after a conflict or a crash, dropped nothing).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from . import archive as ar
from . import lake as lk
from .config import RETENTION_DAYS
from .exports import is_stale
from .holds import active_hold
from .storage import Root, error_line

log = logging.getLogger(__name__)

DEFAULT_DAYS = RETENTION_DAYS
COMMIT_ATTEMPTS = 5
"""Tries of a run when writers keep committing into the partitions it drops."""


@dataclass
class RetentionResult:
    today: str
    days: int
    dry_run: bool = False
    dropped: list[str] = field(default_factory=list)  # "YYYY-MM-DD/org"
    kept: dict[str, str] = field(default_factory=dict)  # "YYYY-MM-DD/org" -> why it was kept
    held: dict[str, str] = field(default_factory=dict)  # "YYYY-MM-DD/org" -> the hold's reason
    receipts: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # organization -> why its archive failed

    def as_dict(self) -> dict:
        """The run's report; a dry run says ``would_drop`` where a real run says ``dropped``; ``failed``
        only when an organization's archive could not be read or written."""
        done = "would_drop" if self.dry_run else "dropped"
        report = {
            "today": self.today,
            "days": self.days,
            "dry_run": self.dry_run,
            done: self.dropped,
            "kept": self.kept,
            "held": self.held,
            "receipts": self.receipts,
        }
        return {**report, "failed": self.failed} if self.failed else report

    def keep_failed(self, organization_id: str, days: Iterable[date], exc: BaseException) -> None:
        """Keep an organization's expired partitions when its archive could not be read or its receipt
        written (nothing is dropped that the archive cannot account for); the others go on."""
        error = self.failed[organization_id] = error_line(exc)
        log.error("retention keeps %s's expired partitions: its archive failed: %s", organization_id, error)
        for day in days:
            key = f"{day.isoformat()}/{organization_id}"
            self.kept[key] = f"archive failed: {error}"
            if key in self.dropped:
                self.dropped.remove(key)


@dataclass(frozen=True)
class Drop:
    """One partition to drop, with the proof it was archived."""

    day: date
    organization_id: str
    rows: int
    manifest_sha256: str | None


def expired_dates(dates: list[date], today: date, days: int) -> list[date]:
    """Partition dates with (today - date) > days."""
    return [d for d in dates if (today - d).days > days]


def archive_state(exports: Root, organization_id: str, days: list[date]) -> dict[date, tuple[dict, str]]:
    """Per date, the latest manifest and the SHA-256 of its bytes."""
    latest = ar.latest_manifest_paths(ar.list_org(exports, organization_id), organization_id)
    state = {}
    for day in days:
        if day in latest:
            body = exports.read_bytes(latest[day])
            state[day] = (json.loads(body), hashlib.sha256(body).hexdigest())
    return state


def receipt_path(exports: Root, organization_id: str, today: date, run_id: str) -> str:
    """``<org>/_receipts/<run date>_<run id>.json`` (a numbered name if a retried run already wrote one)."""
    stem = f"{today.isoformat()}_{ar.safe_name(run_id)}"
    path, attempt = exports.join(organization_id, ar.RECEIPTS, f"{stem}.json"), 1
    while exports.exists(path):
        attempt += 1
        path = exports.join(organization_id, ar.RECEIPTS, f"{stem}_{attempt}.json")
    return path


def write_receipt(
    exports: Root,
    organization_id: str,
    today: date,
    run_id: str,
    drops: list[Drop],
    forced: bool,
    now: datetime | None = None,
) -> str:
    """Record, in the organization's chain, what this run drops."""
    path = receipt_path(exports, organization_id, today, run_id)
    ar.append(
        exports,
        organization_id,
        path,
        {
            "kind": "purge",
            "run_date": today.isoformat(),
            "run_id": run_id,
            "forced": forced,
            "dropped": [
                {"date": d.day.isoformat(), "rows": d.rows, "manifest_sha256": d.manifest_sha256} for d in drops
            ],
        },
        now,
    )
    return exports.display(path)


def plan(exports: Root, table: Any, today: date, result: RetentionResult, force: bool) -> dict[str, list[Drop]]:
    """Per organization, the expired partitions of ``table`` (at the version it was read at) that may go
    on ``today``; fills ``result`` with what is dropped, kept and held."""
    expired: dict[str, dict[date, int]] = defaultdict(dict)
    counts = lk.row_counts(table) if table is not None else {}  # one metadata read for every partition
    old = set(expired_dates(sorted({day for day, _ in counts}), today, result.days))
    for (day, org), rows in counts.items():
        if day in old:
            expired[org][day] = rows
    drops: dict[str, list[Drop]] = {}
    for org, partitions in sorted(expired.items()):
        try:
            hold = active_hold(exports, org, today)
            state = archive_state(exports, org, sorted(partitions)) if hold is None else {}
        except Exception as exc:  # this organization's partitions stay; the others' go on
            result.keep_failed(org, partitions, exc)
            continue
        if hold is not None:
            result.held.update({f"{day.isoformat()}/{org}": f"legal hold: {hold.get('reason')}" for day in partitions})
            continue
        for day, rows in sorted(partitions.items()):
            key = f"{day.isoformat()}/{org}"
            manifest, digest = state.get(day, (None, None))
            status = "missing" if manifest is None else "stale" if is_stale(manifest, rows) else "current"
            if status != "current" and not force:
                result.kept[key] = f"daily export is {status}"
                continue
            drops.setdefault(org, []).append(Drop(day, org, rows, digest))
            result.dropped.append(key)
    result.dropped.sort()
    return drops


def retain(
    lake_url: str,
    export_url: str,
    today: date,
    days: int = DEFAULT_DAYS,
    force: bool = False,
    dry_run: bool = False,
    run_id: str | None = None,
) -> RetentionResult:
    """Drop every expired (date, organization) whose latest version is current; keep and report the rest.

    The rows counted and checked against the archive are those of one table version, and the delete
    commits only if no writer added files to those partitions since; otherwise the run checks them
    again (an ingest of a late event, a compaction), with the same run id.
    """
    lake, exports = Root.open(lake_url), Root.open(export_url)
    run = run_id or ar.unique_suffix()
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        result = RetentionResult(today.isoformat(), days, dry_run)
        table = lk.events_table(lake).open()
        drops = plan(exports, table, today, result, force)
        if dry_run or not drops:
            break
        for org, org_drops in list(drops.items()):  # the receipt first: a crash leaves data, never a silent drop
            try:
                result.receipts.append(write_receipt(exports, org, today, run, org_drops, force))
            except Exception as exc:  # no receipt, no drop: this organization's partitions stay
                result.keep_failed(org, (d.day for d in org_drops), exc)
                del drops[org]
        if not drops:
            break
        metadata = lk.commit_metadata(
            operation="retention", run_id=run, dropped=result.dropped, receipts=result.receipts
        )
        try:
            lk.drop_partitions(table, [(d.day, d.organization_id) for ds in drops.values() for d in ds], metadata)
            break
        except lk.CommitConflict as exc:
            log.warning(
                "retention run %s, attempt %d: another writer committed into the partitions it drops (%s); "
                "its receipts %s record a drop that did not happen; checking again",
                run,
                attempt,
                exc,
                result.receipts,
            )
    else:
        raise lk.CommitConflict(
            f"retention run {run}: the events table kept changing; gave up after {COMMIT_ATTEMPTS} attempts "
            "(nothing was dropped by the last one; run it again)"
        )
    if result.kept:
        log.warning(
            "kept %d expired partitions whose daily export is missing or stale (export them, or use --force), e.g. %s",
            len(result.kept),
            next(iter(result.kept)),
        )
    return result
