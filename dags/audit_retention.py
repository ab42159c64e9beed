"""Drop lake partitions older than the retention window, once their daily export exists."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, get_current_context, task

from include.audit.dag_defaults import retrying


@dag(
    dag_id="audit_retention",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=retrying(2, timedelta(minutes=5), timedelta(minutes=30)),
    tags=["audit", "retention"],
    doc_md="""
### Audit retention
Drops every `event_date` partition more than 90 days before the run's logical date, but never
an (event_date, organization) whose daily CSV export is missing or older than its data: those
are kept and listed in the task's result until they are exported.
""",
)
def audit_retention():
    @task
    def drop_expired_partitions() -> dict:
        """Apply retention as of the logical date; returns what was dropped and what was kept."""
        from include.audit.pipeline import apply_retention

        return apply_retention(get_current_context()["logical_date"].date())

    drop_expired_partitions()


audit_retention()
