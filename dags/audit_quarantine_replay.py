"""Replay quarantined audit events through the current rules, from the Airflow UI's trigger form."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from include.audit.dag_defaults import events_asset, retrying
from include.audit.pipeline import replayable_reasons

REASONS = replayable_reasons()


@dag(
    dag_id="audit_quarantine_replay",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=retrying(1, timedelta(minutes=1), timedelta(minutes=5)),
    tags=["audit", "quarantine"],
    params={
        "reasons": Param(
            list(REASONS),
            type="array",
            items={"type": "string", "enum": REASONS},
            uniqueItems=True,
            title="Reasons",
            description="Replay lines quarantined for these reasons (outside_retention never replays)",
        ),
        "since": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Since",
            description="Only lines quarantined on or after this UTC date, e.g. 2026-11-20 (empty: all)",
        ),
    },
    doc_md="""
### Quarantine replay
Re-runs quarantined lines of the chosen reasons through the current rules at the current time:
lines that now pass enter the lake through the normal path (dedupe, validation, commit) and
update the `audit_events` Asset; lines that still fail stay quarantined with their (possibly new)
reason. Every record is marked once with its outcome, so a second run does nothing.
Same as `python -m include.audit replay --lake-root L [--reason R ...] [--since YYYY-MM-DD]`.
""",
)
def audit_quarantine_replay():
    @task(outlets=[events_asset()])
    def replay_quarantine() -> dict:
        """Replay what the trigger form selects; returns the replay's counts."""
        from include.audit.pipeline import replay_from_params

        return replay_from_params(dict(get_current_context()["params"]))

    replay_quarantine()


audit_quarantine_replay()
