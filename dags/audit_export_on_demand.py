"""Export one organization's audit events for a time range, from the Airflow UI's trigger form."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from include.audit.catalog import ACTIONS
from include.audit.dag_defaults import retrying
from include.audit.events import ORGANIZATION_ID_PATTERN


@dag(
    dag_id="audit_export_on_demand",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args=retrying(1, timedelta(seconds=30), timedelta(minutes=2)),
    tags=["audit", "export"],
    params={
        "organization": Param(
            "",
            type="string",
            pattern=ORGANIZATION_ID_PATTERN,
            title="Organization",
            description="Organization id, e.g. acme-001",
        ),
        "start": Param(
            type="string",
            format="date-time",
            title="From",
            description="Inclusive, with timezone, e.g. 2026-11-01T00:00:00Z",
        ),
        "end": Param(
            type="string",
            format="date-time",
            title="To",
            description="Inclusive, with timezone, e.g. 2026-11-07T23:59:59Z",
        ),
        "search": Param(
            None, type=["null", "string"], title="Search", description="Case-insensitive text to find in any column"
        ),
        "user": Param(None, type=["null", "string"], title="User", description="User email(s), comma-separated"),
        "actions": Param(
            [],
            type="array",
            items={"type": "string", "enum": list(ACTIONS)},
            title="Actions",
            description="Only these actions (empty: all)",
        ),
        "query": Param(
            None,
            type=["null", "string"],
            title="Query",
            description='Filter language, e.g. action:CreateJobRun -type:"File modifications" (README)',
        ),
    },
    doc_md="""
### On-demand audit export
Trigger with the form: organization, From/To (inclusive, with timezone, at most 366 days apart),
optional search text, users, actions and a query in the filter language (README, "Audit Logs page
and API"); search, users and actions become terms of that query. Writes one CSV in the daily-export format to
`<AUDIT_EXPORT_ROOT>/_on-demand/<org>/audit-log_<org>_<from>_<to>_<digest>.csv` (the digest
names the filter; nothing is overwritten: a rerun with other rows gets the next `.vN.csv`); the
task result names it.
""",
)
def audit_export_on_demand():
    @task
    def export_csv() -> dict:
        """Run the export described by the trigger form."""
        from include.audit.pipeline import export_on_demand

        return export_on_demand(dict(get_current_context()["params"]))

    export_csv()


audit_export_on_demand()
