"""What each Airflow task runs: one function per task, roots from the AUDIT_* environment.

DAG files only wire these together; everything here returns small JSON-able results (XCom).
Object storage is reached with the Airflow connection ``audit_s3`` when it exists (``connections``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .config import Roots
from .connections import uses_airflow_storage


@uses_airflow_storage
def ingest_new_files(now: datetime | None = None) -> dict[str, Any]:
    """Ingest every raw file not yet in the lake."""
    from .ingest import ingest

    roots = Roots.from_env()
    return ingest(roots.raw, roots.lake, now=now).as_dict()


def ingest_and_announce(asset_event: Any) -> dict[str, Any]:
    """Ingest, then put the run's counts on the events Asset's event (``outlet_events[asset]``).

    The Assets view then shows, per run, how many files and events came in, what was quarantined
    and how fresh the lake is. A raw file the store refused fails the task after the rest committed
    (its retry, and every later run, try that file again); the daily export still runs on its cron.
    """
    from .assets import ingest_extra

    summary = ingest_new_files()
    asset_event.extra = ingest_extra(summary)
    return done_or_failed(summary, "ingest")


def export_date_for(logical_date: datetime | None, run_after: datetime | None = None) -> date:
    """A daily-export run exports the UTC day before its logical date.

    An asset-triggered run has no logical date (Airflow 3): it re-exports the day before it was
    triggered (``run_after``), so late events of yesterday reach the archive.
    """
    when = logical_date or run_after
    if when is None:
        raise ValueError("a run has a logical date or a run_after time")
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return aware.astimezone(UTC).date() - timedelta(days=1)


@uses_airflow_storage
def archive_work(day: date, only_behind: bool = False) -> list[dict[str, str]]:
    """What a daily-export run archives: ``day`` for every organization active in the retention
    window or with an archive begun before ``day`` (a heartbeat when it had no events), and every
    stale or missing earlier day.

    An asset-triggered run (``only_behind``) archives only ``day``, for the organizations whose
    archive of it is missing or stale: late events reach the archive without waiting for 00:30.
    """
    from .exports import export_status, pending_exports
    from .storage import Root

    roots = Roots.from_env()
    work = pending_exports(roots.lake, roots.exports, day)
    if only_behind:
        lake, exports = Root.open(roots.lake), Root.open(roots.exports)
        work = [(d, o) for d, o in work if d == day and export_status(lake, exports, d, o) != "current"]
    return [{"day": when.isoformat(), "organization_id": org} for when, org in work]


@uses_airflow_storage
def export_organization_day(day: date, organization_id: str) -> dict[str, Any]:
    """Archive one organization's day (a new version only when the lake gained rows)."""
    from .exports import export_daily

    roots = Roots.from_env()
    (result,) = export_daily(roots.lake, roots.exports, day, [organization_id])
    return asdict(result)


def done_or_failed(report: dict[str, Any], what: str) -> dict[str, Any]:
    """A task's ``report``, or RuntimeError naming its ``failed`` entries: the task fails after doing
    the rest (one organization or partition never stops the others), and its retry tries those again."""
    if report.get("failed"):
        raise RuntimeError(
            f"{what} failed for " + "; ".join(f"{key}: {error}" for key, error in report["failed"].items())
        )
    return report


@uses_airflow_storage
def apply_retention(today: date, days: int = 90, run_id: str | None = None) -> dict[str, Any]:
    """Drop expired partitions that have been archived (a purge receipt per organization names them)."""
    from .retention import retain

    roots = Roots.from_env()
    return done_or_failed(retain(roots.lake, roots.exports, today, days, run_id=run_id).as_dict(), "retention")


@contextlib.contextmanager
def form_input() -> Iterator[None]:
    """Within the block, bad trigger-form values fail the task at once: retrying cannot help."""
    from .query import BadInput

    try:
        yield
    except BadInput as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"bad input: {exc}") from None


@uses_airflow_storage
def on_demand_path(organization_id: str, start: datetime, end: datetime, params: dict[str, Any]) -> str:
    """Where an on-demand export lands (``_`` cannot start an org id, so no organization collides).

    The name carries a digest of the form's values: another filter over the same range gets a file
    of its own, and a rerun whose rows changed gets the next ``.vN`` name (nothing is overwritten).
    """
    from .storage import Root

    exports = Root.open(Roots.from_env().exports)
    stamp = "{:%Y%m%dT%H%M%SZ}"
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return exports.display(
        exports.join(
            "_on-demand",
            organization_id,
            f"audit-log_{organization_id}_{stamp.format(start)}_{stamp.format(end)}_{digest}.csv",
        )
    )


@uses_airflow_storage
def export_on_demand(params: dict[str, Any]) -> dict[str, Any]:
    """Export from the trigger form's params: organization, start, end, query; search, user and actions
    become query terms. The range is capped (MAX_RANGE) like the API's."""
    from .exports import export_filtered
    from .filters import parse
    from .inputs import parse_time, validate_organization_id
    from .query import EventFilter

    with form_input():
        org = validate_organization_id(str(params.get("organization", "")).strip())
        start, end = parse_time(str(params.get("start")), "start"), parse_time(str(params.get("end")), "end")
        flt = EventFilter.from_fields(
            org,
            start,
            end,
            parse(params.get("query") or None),
            search=params.get("search") or None,
            users=str(params.get("user") or "").split(","),
            actions=params.get("actions") or (),
        )
    out = on_demand_path(org, flt.start, flt.end, params)
    return asdict(export_filtered(Roots.from_env().lake, flt, out, never_overwrite=True))


@uses_airflow_storage
def compact_day(day: date) -> dict[str, Any]:
    """Compact one event date's partitions (before its daily export reads them)."""
    from .maintenance import compact

    return done_or_failed(compact(Roots.from_env().lake, day).as_dict(), "compaction")


@uses_airflow_storage
def compact_lake() -> dict[str, Any]:
    """Compact every partition that holds more than one file."""
    from .maintenance import compact

    return done_or_failed(compact(Roots.from_env().lake).as_dict(), "compaction")


@uses_airflow_storage
def vacuum_lake() -> dict[str, Any]:
    """Vacuum the lake's tables (files unreferenced for 7 days) and checkpoint them."""
    from .maintenance import vacuum

    return vacuum(Roots.from_env().lake)


def replayable_reasons() -> list[str]:
    """Quarantine reasons a replay may retry (the trigger form's choices)."""
    from .events import REPLAYABLE

    return list(REPLAYABLE)


def replay_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """Replay from the trigger form: ``reasons`` (empty: every replayable one) and ``since`` (a date or empty)."""
    from .inputs import BadInput, parse_date

    allowed = replayable_reasons()
    reasons = list(params.get("reasons") or allowed)
    with form_input():
        if unknown := sorted(set(reasons) - set(allowed)):
            raise BadInput(f"reasons {', '.join(unknown)} cannot be replayed; choose among {', '.join(allowed)}")
        since = parse_date(str(params["since"]), "since") if params.get("since") else None
    return replay_quarantine(reasons, since)


@uses_airflow_storage
def replay_quarantine(reasons: list[str], since: date | None = None) -> dict[str, Any]:
    """Re-run quarantined lines of ``reasons`` (quarantined since ``since``) through the current rules, now."""
    from .replay import replay

    return replay(Roots.from_env().lake, reasons=reasons, since=since)
