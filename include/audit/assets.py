"""The Airflow Assets of the pipeline (raw -> lake -> archive) and what an ingest tells about its run.

The asset names are stable (schedules match on them); where the data lives, from the AUDIT_*
roots, is in each asset's ``extra["uri"]``, so the Assets view shows it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .config import root

EVENTS_ASSET = "audit_events"
ARCHIVE_ASSET = "audit_archive"

# Summary keys copied as they are into the asset event's extra (counts and freshness only).
_EXTRA_KEYS = (
    "files",
    "lines",
    "ingested",
    "duplicates",
    "quarantined",
    "quarantined_total",
    "skipped_files",
    "max_event_time",
    "lag_seconds",
)


def asset_uri(url: str, *parts: str) -> str:
    """``url`` (a root, local or remote) joined with ``parts`` as an absolute URI."""
    base = url if "://" in url else "file://" + os.path.abspath(url)
    return "/".join([base.rstrip("/"), *parts])


def events_uri() -> str:
    """The lake's events table."""
    return asset_uri(root("AUDIT_LAKE_ROOT"), "events")


def archive_uri() -> str:
    """The daily CSV archive."""
    return asset_uri(root("AUDIT_EXPORT_ROOT"))


def ingest_extra(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The asset-event ``extra`` for one ingest run: its counts, newest event time and lag (JSON-able)."""
    extra = {key: summary[key] for key in _EXTRA_KEYS if key in summary}
    extra.setdefault("quarantined", {})
    if isinstance(extra.get("max_event_time"), datetime):
        extra["max_event_time"] = extra["max_event_time"].astimezone(UTC).isoformat().replace("+00:00", "Z")
    return extra
