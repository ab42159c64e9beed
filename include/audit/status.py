"""What is in the lake and the archive: counts for operators, the demo and the ``status`` command."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from . import archive as ar
from . import lake as lk
from . import quarantine
from .events import REASONS
from .exports import is_stale
from .holds import active_hold
from .storage import Root, error_line


def archive_health(
    lake: Root, exports: Root, today: date | None = None, counts: dict[tuple[date, str], int] | None = None
) -> dict[str, dict[str, Any]]:
    """Per organization: days archived, latest amended day, hold, last receipt, days missing or stale.

    Missing: a day from the organization's first export through yesterday without a version (or a
    lake partition without one). Stale: the latest version has fewer source rows than the partition.
    """
    today = today or datetime.now(UTC).date()
    counts = lk.partition_row_counts(lake) if counts is None else counts
    orgs = sorted(set(ar.organizations(exports)) | {org for _, org in counts})
    health = {}
    for org in orgs:
        partitions = {day: rows for (day, o), rows in counts.items() if o == org}
        try:
            health[org] = _organization_health(exports, org, partitions, today)
        except Exception as exc:  # a damaged archive is reported as such; the others' health still is
            health[org] = {**dict.fromkeys(HEALTH_FIELDS), "error": error_line(exc)}
    return health


HEALTH_FIELDS = (
    "days_archived",
    "first_day",
    "last_day",
    "latest_amended_day",
    "hold",
    "last_receipt",
    "missing_days",
    "stale_days",
)


def _organization_health(exports: Root, org: str, partitions: dict[date, int], today: date) -> dict[str, Any]:
    """One organization's entry of :func:`archive_health` (its ``HEALTH_FIELDS``)."""
    paths = ar.list_org(exports, org)
    latest = ar.latest_manifest_paths(paths, org)
    expected = {day for day in partitions if day < today}
    if latest:
        first = min(latest)
        expected |= {first + timedelta(days=n) for n in range((today - first).days)}
    stale = [
        day
        for day, rows in partitions.items()
        if day in latest and rows and is_stale(ar.read_entry(exports, latest[day]), rows)
    ]
    receipts = [p for p in paths if f"/{ar.RECEIPTS}/" in p and p.endswith(".json")]
    hold = active_hold(exports, org, today)
    return {
        "days_archived": len(latest),
        "first_day": min(latest).isoformat() if latest else None,
        "last_day": max(latest).isoformat() if latest else None,
        "latest_amended_day": max(
            (d.isoformat() for d, p in latest.items() if ar.parse_name(p, org).version > 1), default=None
        ),
        "hold": {k: hold.get(k) for k in ("reason", "until", "by", "created_at")} if hold else None,
        "last_receipt": exports.display(receipts[-1]) if receipts else None,
        "missing_days": sorted(d.isoformat() for d in expected - set(latest)),
        "stale_days": sorted(d.isoformat() for d in stale),
    }


def lake_status(lake_url: str, export_url: str, raw_url: str | None = None) -> dict[str, Any]:
    """Events per date, quarantine per reason, freshness, the validation reports, and export health."""
    from .ingest import freshness

    lake, exports = Root.open(lake_url), Root.open(export_url)
    counts = lk.partition_row_counts(lake)
    per_date: dict[str, int] = {}
    for (day, _), rows in sorted(counts.items()):
        per_date[day.isoformat()] = per_date.get(day.isoformat(), 0) + rows
    quarantined = quarantine.reason_counts(lake)
    index = lake.join(lk.VALIDATION, "index.html")
    return {
        "events": sum(per_date.values()),
        "events_per_date": per_date,
        "quarantined": {r: quarantined[r] for r in REASONS if r in quarantined},
        "freshness": freshness(raw_url, lake_url) if raw_url else None,
        "validation_report": lake.display(index) if lake.exists(index) else None,
        "archive": archive_health(lake, exports, counts=counts),
    }
