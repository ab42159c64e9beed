"""Archive yesterday's audit events as one CSV per organization, every day, and amend stale days."""

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
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("30 0 * * *", timezone="UTC"), assets=events_asset()),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    default_args=retrying(3, timedelta(minutes=1), timedelta(minutes=15)),
    deadline=archive_deadline(time(0, 30)),
    tags=["audit", "export"],
    doc_md="""
### Audit daily export (the compliance archive)
A run archives the **UTC day before its logical date** for every organization with events in the
lake within the retention window or an archive begun before that day: `<AUDIT_EXPORT_ROOT>/<org>/YYYY/MM/DD/audit-log_<org>_<date>.csv`
and its `.manifest.json` (a header-only CSV on a quiet day: a heartbeat). It also re-archives every
earlier (date, organization) of the window whose latest version is stale (late events) or missing:
a new version `...vN.csv` next to the old ones, which are never touched. One mapped task per
(date, organization). It runs at 00:30 UTC so the last minutes of the day are ingested first,
after compacting the export date's partitions. It also runs whenever ingest updates the
`audit_events` Asset: such a run has no logical date and archives, for the day before it was
triggered, only the organizations whose archive of that day is missing or stale. Each export
updates the `audit_archive` Asset. Alert (README, "Operating"): yesterday's archive not complete
by 02:00 UTC.
Backfill: `airflow backfill create --dag-id audit_daily_export --from-date ... --to-date ...`.
""",
)
def audit_daily_export():
    @task
    def compact_export_date() -> dict:
        """Compact the export date's partitions first: the export then reads one file per organization."""
        from include.audit.inputs import parse_date
        from include.audit.pipeline import compact_day

        return compact_day(parse_date(_export_date()))

    @task(trigger_rule="all_done")  # a failed compaction only makes the export read more files
    def list_work() -> list[dict[str, str]]:
        """The (date, organization) pairs to archive: the export date's, plus stale or missing ones."""
        from include.audit.inputs import parse_date
        from include.audit.pipeline import archive_work

        asset_triggered = get_current_context()["dag_run"].logical_date is None
        return archive_work(parse_date(_export_date()), only_behind=asset_triggered)

    @task(max_active_tis_per_dagrun=8, outlets=[ARCHIVE])
    def export_organization(day: str, organization_id: str) -> dict:
        """Archive one organization's day."""
        from include.audit.inputs import parse_date
        from include.audit.pipeline import export_organization_day

        return export_organization_day(parse_date(day), organization_id)

    work = list_work()
    compact_export_date() >> work
    export_organization.expand_kwargs(work)


audit_daily_export()
