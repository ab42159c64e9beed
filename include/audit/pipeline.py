"""What each Airflow task runs: one function per task, roots from the AUDIT_* environment.

DAG files only wire these together; everything here returns small JSON-able results (XCom).
Object storage is reached with the Airflow connection ``audit_s3`` when it exists (``connections``).
"""

from __future__ import annotations

import hashlib
import json
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


def export_date_for(logical_date: datetime) -> date:
    """A daily-export run exports the UTC day before its logical date."""
    aware = logical_date if logical_date.tzinfo else logical_date.replace(tzinfo=UTC)
    return aware.astimezone(UTC).date() - timedelta(days=1)


@uses_airflow_storage
def organizations_on(day: date) -> list[str]:
    """Organizations with events on ``day`` (the daily export fans out over these)."""
    from .lake import organizations
    from .storage import Root

    return organizations(Root.open(Roots.from_env().lake), day)


@uses_airflow_storage
def archive_work(day: date) -> list[dict[str, str]]:
    """What a daily-export run archives: ``day`` for every organization active in the retention
    window (a heartbeat when it had no events), and every stale or missing earlier day."""
    from .exports import pending_exports

    roots = Roots.from_env()
    return [{"day": when.isoformat(), "organization_id": org} for when, org in
            pending_exports(roots.lake, roots.exports, day)]


@uses_airflow_storage
def export_organization_day(day: date, organization_id: str) -> dict[str, Any]:
    """Archive one organization's day (a new version only when the lake gained rows)."""
    from .exports import export_daily

    roots = Roots.from_env()
    (result,) = export_daily(roots.lake, roots.exports, day, [organization_id])
    return asdict(result)


@uses_airflow_storage
def apply_retention(today: date, days: int = 90, run_id: str | None = None) -> dict[str, Any]:
    """Drop expired partitions that have been archived (a purge receipt per organization names them)."""
    from .retention import retain

    roots = Roots.from_env()
    return retain(roots.lake, roots.exports, today, days, run_id=run_id).as_dict()


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
    return exports.display(exports.join(
        "_on-demand", organization_id,
        f"audit-log_{organization_id}_{stamp.format(start)}_{stamp.format(end)}_{digest}.csv"))


@uses_airflow_storage
def export_on_demand(params: dict[str, Any]) -> dict[str, Any]:
    """Export from the trigger form's params: organization, start, end, query; search, user and actions
    become query terms. The range is capped (MAX_RANGE) like the API's."""
    from .exports import export_filtered
    from .filters import parse
    from .inputs import BadInput, parse_time, validate_organization_id
    from .query import EventFilter

    try:
        org = validate_organization_id(str(params.get("organization", "")).strip())
        start, end = parse_time(str(params.get("start")), "start"), parse_time(str(params.get("end")), "end")
        flt = EventFilter.from_fields(org, start, end, parse(params.get("query") or None),
                                      search=params.get("search") or None,
                                      users=str(params.get("user") or "").split(","),
                                      actions=params.get("actions") or ())
    except BadInput as exc:  # the form's values are wrong: retrying cannot help
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"bad input: {exc}") from None
    out = on_demand_path(org, flt.start, flt.end, params)
    return asdict(export_filtered(Roots.from_env().lake, flt, out, never_overwrite=True))


@uses_airflow_storage
def compact_day(day: date) -> dict[str, Any]:
    """Compact one event date's partitions (before its daily export reads them)."""
    from .maintenance import compact

    return compact(Roots.from_env().lake, day).as_dict()


@uses_airflow_storage
def compact_lake() -> dict[str, Any]:
    """Compact every partition that holds more than one file."""
    from .maintenance import compact

    return compact(Roots.from_env().lake).as_dict()


@uses_airflow_storage
def vacuum_lake() -> dict[str, Any]:
    """Vacuum the lake's tables (files unreferenced for 7 days) and checkpoint them."""
    from .maintenance import vacuum

    return vacuum(Roots.from_env().lake)
