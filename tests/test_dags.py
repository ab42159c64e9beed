"""The DAGs: they import cleanly, are wired as documented, and run through Airflow (dag.test)."""

import csv
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from include.audit.generate import generate

REPO = Path(__file__).resolve().parents[1]
DAG_IDS = {
    "audit_maintenance",
    "audit_ingest",
    "audit_daily_export",
    "audit_retention",
    "audit_export_on_demand",
    "audit_quarantine_replay",
}
DAG_FILES = sorted((REPO / "dags").glob("*.py"))

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_every_dag_file_defines_the_documented_dags(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS


# --- integrity, one case per DAG file (as Astronomer's project template does) ----------------------


@pytest.fixture
def no_io_at_parse(tmp_path, monkeypatch):
    """Roots that do not exist and a network that refuses every connection: parsing must touch neither."""
    roots = {variable: tmp_path / variable for variable in ("AUDIT_RAW_ROOT", "AUDIT_LAKE_ROOT", "AUDIT_EXPORT_ROOT")}
    for variable, path in roots.items():
        monkeypatch.setenv(variable, str(path))

    def refuse(*args, **kwargs):
        raise AssertionError(f"a DAG file opened a network connection at parse time: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return roots


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[f.stem for f in DAG_FILES])
def test_dag_file_imports_cleanly_without_io(dag_file, no_io_at_parse):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dag_file))
    assert bag.import_errors == {}
    assert len(bag.dag_ids) == 1, bag.dag_ids  # one DAG per file, named like it
    assert bag.dag_ids[0] == dag_file.stem
    assert not any(path.exists() for path in no_io_at_parse.values())


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_dag_is_documented_tagged_and_retried(dagbag, dag_id):
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


def test_a_failed_compaction_never_holds_back_the_archive(dagbag):
    """Compacting the export date first is an optimization: the exports run once it is done, failed or not."""
    dag = dagbag.dags["audit_daily_export"]
    assert dag.get_task("list_work").upstream_task_ids == {"compact_export_date"}
    assert dag.get_task("list_work").trigger_rule == "all_done"


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

    # the daily export run on D+1 00:30 archives D, one mapped task per (date, organization)
    day = (now - timedelta(days=1)).date()
    logical = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + timedelta(minutes=30)
    _succeeded(dagbag.dags["audit_daily_export"].test(logical_date=logical))
    files = sorted(Path(roots["exports"]).rglob(f"*_{day}.csv"))
    orgs_that_day = {o for (d, o) in expected.per_partition if d == day.isoformat()}
    assert {f.parent.parent.parent.parent.name for f in files} == orgs_that_day
    rows = sum(len(list(csv.DictReader(f.open(newline="")))) for f in files)
    assert rows == sum(n for (d, _), n in expected.per_partition.items() if d == day.isoformat())

    # retention with everything recent drops nothing
    _succeeded(dagbag.dags["audit_retention"].test(logical_date=now))
    assert list(Path(roots["lake"], "events").rglob("*.parquet")) == lake_events

    org = sorted(orgs_that_day)[0]
    run = dagbag.dags["audit_export_on_demand"].test(
        run_conf={
            "organization": org,
            "start": f"{day}T00:00:00Z",
            "end": f"{day}T23:59:59.999999Z",
            "search": None,
            "user": None,
            "actions": [],
        }
    )
    _succeeded(run)
    (out,) = Path(roots["exports"], "_on-demand", org).glob("*.csv")
    daily = Path(roots["exports"], org, f"{day:%Y/%m/%d}", f"audit-log_{org}_{day}.csv")
    assert out.read_bytes() == daily.read_bytes()  # same rows, same format


def test_an_ingest_that_could_not_read_a_file_fails_after_committing_the_rest(dagbag, airflow_db, roots, monkeypatch):
    """The task fails (so its retries and the alert see it) but only after every other file committed."""
    from include.audit import raw as raw_module

    from .helpers import event, write_lines

    raw = Path(roots["raw"])
    recent = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_lines(raw / "a.jsonl", [event(event_id="a", event_time=recent)])
    write_lines(raw / "refused.jsonl", [event(event_id="refused", event_time=recent)])
    listed = raw_module.discover

    def listed_then_refused(root):  # a symlink put in its place after the listing: O_NOFOLLOW refuses it
        found = listed(root)
        (raw / "refused.jsonl").rename(raw / ".elsewhere")
        (raw / "refused.jsonl").symlink_to(raw / ".elsewhere")
        return found

    monkeypatch.setattr(raw_module, "discover", listed_then_refused)
    dag = dagbag.dags["audit_ingest"]
    for task in dag.tasks:
        monkeypatch.setattr(task, "retries", 0)  # no retry waits in a test
    assert dag.test().state == "failed"
    import polars as pl

    assert pl.scan_delta(str(Path(roots["lake"], "events"))).collect()["event_id"].to_list() == ["a"]


def test_on_demand_export_refuses_bad_input(dagbag, airflow_db, roots):
    run = dagbag.dags["audit_export_on_demand"].test(
        run_conf={"organization": "acme", "start": "2026-11-26T00:00:00Z", "end": "2026-11-25T00:00:00Z", "actions": []}
    )
    assert run.state == "failed"
    assert not Path(roots["exports"]).exists()
