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
an (event_date, organization) whose archived version is missing or older than its data (kept and
listed until archived), nor any partition of an organization under a legal hold (`hold place`).
Each organization that loses partitions gets a purge receipt in its archive chain:
`<AUDIT_EXPORT_ROOT>/<org>/_receipts/<run date>_<run id>.json`.
""",
)
def audit_retention():
    @task
    def drop_expired_partitions() -> dict:
        """Apply retention as of the logical date; returns what was dropped and what was kept."""
        from include.audit.pipeline import apply_retention

        context = get_current_context()
        return apply_retention(context["logical_date"].date(), run_id=context["run_id"])

    drop_expired_partitions()


audit_retention()
