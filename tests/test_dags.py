"""The DAGs: they import cleanly, are wired as documented, and run through Airflow (dag.test)."""

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from include.audit.generate import generate

REPO = Path(__file__).resolve().parents[1]
DAG_IDS = {"audit_ingest", "audit_daily_export", "audit_retention", "audit_export_on_demand",
           "audit_quarantine_replay"}

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS


def test_dags_are_documented_tagged_and_retried(dagbag):
    for dag_id in DAG_IDS:
        dag = dagbag.dags[dag_id]
        assert "audit" in dag.tags and dag.doc_md
        for task in dag.tasks:
            assert task.retries >= 1, (dag_id, task.task_id)


def test_schedules(dagbag):
    ingest = dagbag.dags["audit_ingest"]
    assert ingest.max_active_runs == 1 and ingest.catchup is False
    assert ingest.schedule == timedelta(minutes=10)
    assert dagbag.dags["audit_export_on_demand"].schedule is None
    assert dagbag.dags["audit_daily_export"].schedule.timetable.expression == "30 0 * * *"  # or the events asset
    assert dagbag.dags["audit_retention"].schedule == "0 2 * * *"
    assert dagbag.dags["audit_daily_export"].get_task("export_organization").retry_exponential_backoff


def test_trigger_form_offers_the_catalog(dagbag):
    from include.audit.catalog import ACTIONS

    params = dagbag.dags["audit_export_on_demand"].params
    assert params.get_param("actions").schema["items"]["enum"] == list(ACTIONS)
    assert set(params) >= {"organization", "start", "end", "search", "user", "actions"}


def _succeeded(run) -> None:
    assert run.state == "success", [(ti.task_id, ti.map_index, ti.state) for ti in run.get_task_instances()]


def test_pipeline_runs_through_airflow(dagbag, airflow_db, roots):
    now = datetime.now(UTC)
    expected = generate(roots["raw"], events=600, days=2, organizations=3, now=now - timedelta(minutes=1))
    _succeeded(dagbag.dags["audit_ingest"].test())
    lake_events = list(Path(roots["lake"], "events").rglob("*.parquet"))
    assert lake_events

    # the daily export run on D+1 00:30 exports D, one mapped task per organization
    day = (now - timedelta(days=1)).date()
    logical = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + timedelta(minutes=30)
    _succeeded(dagbag.dags["audit_daily_export"].test(logical_date=logical))
    files = sorted(Path(roots["exports"]).rglob("*.csv"))
    orgs_that_day = {o for (d, o) in expected.per_partition if d == day.isoformat()}
    assert {f.parent.parent.parent.parent.name for f in files} == orgs_that_day
    rows = sum(len(list(csv.DictReader(f.open(newline="")))) for f in files)
    assert rows == sum(n for (d, _), n in expected.per_partition.items() if d == day.isoformat())

    # retention with everything recent drops nothing
    _succeeded(dagbag.dags["audit_retention"].test(logical_date=now))
    assert list(Path(roots["lake"], "events").rglob("*.parquet")) == lake_events

    org = sorted(orgs_that_day)[0]
    run = dagbag.dags["audit_export_on_demand"].test(run_conf={
        "organization": org, "start": f"{day}T00:00:00Z", "end": f"{day}T23:59:59.999999Z",
        "search": None, "user": None, "actions": []})
    _succeeded(run)
    (out,) = Path(roots["exports"], "_on-demand", org).glob("*.csv")
    daily = Path(roots["exports"], org, f"{day:%Y/%m/%d}", f"audit-log_{org}_{day}.csv")
    assert out.read_bytes() == daily.read_bytes()  # same rows, same format


def test_on_demand_export_refuses_bad_input(dagbag, airflow_db, roots):
    run = dagbag.dags["audit_export_on_demand"].test(run_conf={
        "organization": "acme", "start": "2026-11-26T00:00:00Z", "end": "2026-11-25T00:00:00Z", "actions": []})
    assert run.state == "failed"
    assert not Path(roots["exports"]).exists()
