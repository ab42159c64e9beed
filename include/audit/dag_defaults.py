"""What the DAGs share: one retry policy and owner, one alerts webhook, the deadlines, the Assets.

Every task reports its final failure to the alerts webhook (``alerts.WebhookNotifier``); the
deadlines below page it when ingest or the daily archive is late. Their limits are read when the
DAGs are parsed, from $AUDIT_INGEST_STALE_MINUTES (default 30) and $AUDIT_ARCHIVE_DUE_UTC
(``HH:MM``, default 02:00); a value that does not parse falls back to the default, with a warning.
"""

from __future__ import annotations

import logging
import math
import os
from datetime import datetime, time, timedelta
from typing import Any

from airflow.sdk import Asset, DeadlineAlert, DeadlineReference, SyncCallback

from .alerts import WebhookNotifier
from .assets import ARCHIVE_ASSET, EVENTS_ASSET, archive_uri, events_uri

INGEST_STALE_VARIABLE = "AUDIT_INGEST_STALE_MINUTES"
ARCHIVE_DUE_VARIABLE = "AUDIT_ARCHIVE_DUE_UTC"
DEFAULT_INGEST_STALE = timedelta(minutes=30)
DEFAULT_ARCHIVE_DUE = time(2, 0)

log = logging.getLogger(__name__)


def retrying(retries: int, first_delay: timedelta, max_delay: timedelta) -> dict[str, Any]:
    """Airflow ``default_args``: retry ``retries`` times, doubling the wait from ``first_delay`` up to
    ``max_delay``; the last failure goes to the alerts webhook."""
    return {
        "owner": "audit",
        "retries": retries,
        "retry_delay": first_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": max_delay,
        "on_failure_callback": [WebhookNotifier()],
    }


def parse_minutes(text: str | None, default: timedelta) -> timedelta:
    """A non-negative number of minutes, e.g. ``"30"``; ``default`` when unset or invalid."""
    if not text:
        return default
    try:
        minutes = float(text)
    except ValueError:
        minutes = math.nan
    if not math.isfinite(minutes) or minutes < 0:
        log.warning("Ignoring invalid minutes %r; using %s", text, default)
        return default
    return timedelta(minutes=minutes)


def parse_utc_time(text: str | None, default: time) -> time:
    """A UTC time of day as ``HH:MM``; ``default`` when unset or invalid."""
    if not text:
        return default
    try:
        return time.fromisoformat(text.strip())
    except ValueError:
        log.warning("Ignoring invalid time of day %r; using %s", text, default)
        return default


def after(start: time, due: time) -> timedelta:
    """How long after ``start`` the next ``due`` comes (same day, or the next one)."""
    day = datetime(2000, 1, 1)
    gap = datetime.combine(day, due) - datetime.combine(day, start)
    return gap if gap > timedelta(0) else gap + timedelta(days=1)


def alert(what: str, interval: timedelta) -> DeadlineAlert:
    """A deadline ``interval`` after the run's logical date (when it was due), paging the webhook.

    Runs without a logical date (asset-triggered ones) get no deadline; a run that succeeds in
    time clears its own.
    """
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=interval,
        callback=SyncCallback(WebhookNotifier, kwargs={"deadline": what}),
        name=what,
    )


DEADLINES_VARIABLE = "AUDIT_DEADLINE_ALERTS"
"""``off`` leaves deadlines out of the DAGs: for ``airflow dags test`` (``make demo``), which fails on a DAG
with a DeadlineAlert in Airflow 3.3.2 (it looks the in-memory alerts up as database ids). The scheduler is
not affected."""


def deadlines_on() -> bool:
    return os.environ.get(DEADLINES_VARIABLE, "on").strip().lower() != "off"


def ingest_deadline() -> DeadlineAlert | None:
    """Ingest must succeed within $AUDIT_INGEST_STALE_MINUTES of a run's due time."""
    if not deadlines_on():
        return None
    stale = parse_minutes(os.environ.get(INGEST_STALE_VARIABLE), DEFAULT_INGEST_STALE)
    minutes = f"{stale.total_seconds() / 60:g}"
    return alert(f"ingest has not succeeded for {minutes} minutes", stale)


def archive_deadline(scheduled: time) -> DeadlineAlert | None:
    """The daily run started at ``scheduled`` (UTC) must have archived yesterday by $AUDIT_ARCHIVE_DUE_UTC."""
    if not deadlines_on():
        return None
    due = parse_utc_time(os.environ.get(ARCHIVE_DUE_VARIABLE), DEFAULT_ARCHIVE_DUE)
    return alert(f"yesterday's archive is not complete by {due:%H:%M} UTC", after(scheduled, due))


def events_asset() -> Asset:
    """The lake's events table, as the Asset ingest updates and the daily export waits on.

    Assets are matched on name and URI, so both stay fixed; where the data lives is in ``extra``
    (moving a root must not orphan the asset or the schedules on it).
    """
    return Asset(name=EVENTS_ASSET, group="audit", extra={"uri": events_uri()})


def archive_asset() -> Asset:
    """The daily CSV archive, as the Asset the daily export updates (its location in ``extra``)."""
    return Asset(name=ARCHIVE_ASSET, group="audit", extra={"uri": archive_uri()})
