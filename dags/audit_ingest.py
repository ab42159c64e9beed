"""Load new raw audit events into the lake every 10 minutes."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, get_current_context, task

from include.audit.dag_defaults import events_asset, ingest_deadline, retrying

EVENTS = events_asset()


@dag(
    dag_id="audit_ingest",
    schedule=timedelta(minutes=10),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=retrying(3, timedelta(seconds=30), timedelta(minutes=5)),
    deadline=ingest_deadline(),
    tags=["audit", "ingest"],
    doc_md="""
### Audit ingest
Reads every raw JSON Lines file under `AUDIT_RAW_ROOT` that no earlier run committed,
validates each event against the catalog (bad lines go to the quarantine with a reason),
re-checks accepted rows with Great Expectations, and writes date-partitioned Parquet to
`AUDIT_LAKE_ROOT`. Safe to rerun: committed files are skipped, duplicates are counted once.
Events become queryable within one run of their arrival (every 10 minutes).
Each run updates the `audit_events` Asset; its asset event carries the run's counts and lag.
Alerts (README, "Operating"): a failed task, or no success within 30 minutes of a run's due time.
""",
)
def audit_ingest():
    @task(execution_timeout=timedelta(minutes=30), outlets=[EVENTS])
    def ingest_new_files() -> dict:
        """Ingest new raw files; returns the run summary (counts only), also the asset event's extra."""
        from include.audit.pipeline import ingest_and_announce

        return ingest_and_announce(get_current_context()["outlet_events"][EVENTS])

    ingest_new_files()


audit_ingest()
