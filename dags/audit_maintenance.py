"""Keep the lake's tables fast: vacuum unreferenced files and checkpoint, once a day."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from include.audit.dag_defaults import retrying


@dag(
    dag_id="audit_maintenance",
    schedule="0 3 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=retrying(2, timedelta(minutes=5), timedelta(minutes=30)),
    tags=["audit", "maintenance"],
    doc_md="""
### Audit lake maintenance
Compacts any partition still holding several files (the daily export compacts the day it
exports; this catches late data), then vacuums: deletes data files that no table version of the
last 7 days references (compacted, dropped by retention, left by killed writers), and writes
checkpoints so that opening the tables stays fast.
""",
)
def audit_maintenance():
    @task
    def compact_lake() -> dict:
        """Compact every partition of the events table that holds more than one file."""
        from include.audit.pipeline import compact_lake

        return compact_lake()

    @task
    def vacuum_lake() -> dict:
        """Remove unreferenced files after the safe retention; checkpoint the tables."""
        from include.audit.pipeline import vacuum_lake

        return vacuum_lake()

    compact_lake() >> vacuum_lake()


audit_maintenance()
