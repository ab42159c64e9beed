"""Archive yesterday's audit events as one CSV per organization, every day."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task

from include.audit.dag_defaults import archive_asset, archive_deadline, events_asset, retrying

ARCHIVE = archive_asset()

def _export_date() -> str:
    from include.audit.pipeline import export_date_for

    run = get_current_context()["dag_run"]
    return export_date_for(run.logical_date, run.run_after).isoformat()


@dag(
    dag_id="audit_daily_export",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("30 0 * * *", timezone="UTC"),
                                 assets=events_asset()),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    default_args=retrying(3, timedelta(minutes=1), timedelta(minutes=15)),
    deadline=archive_deadline(time(0, 30)),
    tags=["audit", "export"],
    doc_md="""
### Audit daily export
A run exports the **UTC day before its logical date**: for every organization with events
that day it writes `<AUDIT_EXPORT_ROOT>/<org>/YYYY/MM/DD/audit-log_<org>_<date>.csv`
(one mapped task per organization). It runs at 00:30 UTC so that events of the last minutes
of the day are ingested first; rerunning a date re-exports it with any late events.
It also runs whenever ingest updates the `audit_events` Asset: such a run has no logical date
and re-exports, for the day before it was triggered, the organizations whose CSV misses late events. Each export updates the `audit_archive` Asset.
Alert (README, "Operating"): yesterday's archive not complete by 02:00 UTC.
Backfill: `airflow backfill create --dag-id audit_daily_export --from-date ... --to-date ...`.
""",
)
def audit_daily_export():
    @task
    def list_organizations() -> list[str]:
        """Organizations with events on the export date (asset-triggered: those whose CSV is behind)."""
        from include.audit.pipeline import organizations_on
        from include.audit.query import parse_date

        asset_triggered = get_current_context()["dag_run"].logical_date is None
        return organizations_on(parse_date(_export_date()), stale_only=asset_triggered)

    @task(max_active_tis_per_dagrun=8, outlets=[ARCHIVE])
    def export_organization(organization_id: str) -> dict:
        """Write one organization's CSV for the export date."""
        from include.audit.pipeline import export_organization_day
        from include.audit.query import parse_date

        return export_organization_day(parse_date(_export_date()), organization_id)

    export_organization.expand(organization_id=list_organizations())


audit_daily_export()
