"""Operating the pipeline: Assets and schedules, deadline alerts and failure notifications (issue 12).

Alerts go to a real HTTP server on loopback that records every request; DAGs run through
``dag.test()`` and deadlines through Airflow's own deadline models.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, date, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from include.audit.generate import generate

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.airflow


class Webhook:
    """A loopback HTTP endpoint that answers 200 and keeps what was POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.received.append(
                    {"path": self.path, "type": self.headers.get("Content-Type"), "json": json.loads(body)}
                )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def texts(self) -> list[str]:
        return [r["json"]["text"] for r in self.received]


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch):
    """The recording endpoint, configured as the ``audit_alerts`` Airflow connection."""
    hook = Webhook()
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUDIT_ALERTS",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": hook.port,
                "schema": "http",
                "extra": {"endpoint": "/alerts"},
            }
        ),
    )
    yield hook
    hook.close()


def load_dags():
    """The DAGs as the DAG processor sees them now (the environment decides assets and limits)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag


def serialized(dag) -> dict:
    from airflow.serialization.serialized_objects import DagSerialization

    return json.loads(json.dumps(DagSerialization.to_dict(dag)["dag"], default=str))


# --- wiring: what the Assets view and the scheduler see ---------------------------------------


def test_assets_lineage_and_schedules_in_the_serialized_dags(roots):
    dags = load_dags()
    ingest, export = serialized(dags.dags["audit_ingest"]), serialized(dags.dags["audit_daily_export"])
    lake_uri = "file://" + str(Path(roots["lake"]).resolve()) + "/events"
    archive_uri = "file://" + str(Path(roots["exports"]).resolve())

    (ingest_task,) = ingest["tasks"]
    (outlet,) = ingest_task["__var"]["outlets"]
    assert outlet["__type"] == "asset"
    assert (outlet["__var"]["name"], outlet["__var"]["extra"]["uri"]) == ("audit_events", lake_uri)

    timetable = export["timetable"]
    assert timetable["__type"] == "airflow.timetables.assets.AssetOrTimeSchedule"
    assert timetable["__var"]["asset_condition"]["name"] == "audit_events"
    assert timetable["__var"]["asset_condition"]["extra"]["uri"] == lake_uri
    assert timetable["__var"]["timetable"]["__var"]["expression"] == "30 0 * * *"
    assert timetable["__var"]["timetable"]["__var"]["timezone"] == "UTC"
    tasks = {t["__var"]["task_id"]: t["__var"] for t in export["tasks"]}
    (archive,) = tasks["export_organization"]["partial_kwargs"]["outlets"]
    assert (archive["__var"]["name"], archive["__var"]["extra"]["uri"]) == ("audit_archive", archive_uri)

    # the replay feeds the same table, so the Assets view shows it as a second producer
    (replay_task,) = serialized(dags.dags["audit_quarantine_replay"])["tasks"]
    assert replay_task["__var"]["outlets"][0]["__var"]["name"] == "audit_events"


def test_deadlines_and_failure_callbacks_on_every_dag(roots, monkeypatch):
    from airflow.sdk import DeadlineReference

    from include.audit.alerts import WebhookNotifier

    dags = load_dags()
    ingest, export = dags.dags["audit_ingest"], dags.dags["audit_daily_export"]
    (stale,) = ingest.deadline
    (late,) = export.deadline
    assert stale.interval == timedelta(minutes=30) and late.interval == timedelta(hours=1, minutes=30)
    for alert in (stale, late):
        assert alert.reference == DeadlineReference.DAGRUN_LOGICAL_DATE
        assert alert.callback.path == "include.audit.alerts.WebhookNotifier"
    for dag in dags.dags.values():
        for task in dag.tasks:
            assert any(isinstance(cb, WebhookNotifier) for cb in task.on_failure_callback), (dag.dag_id, task)

    monkeypatch.setenv("AUDIT_INGEST_STALE_MINUTES", "45")
    monkeypatch.setenv("AUDIT_ARCHIVE_DUE_UTC", "03:15")
    dags = load_dags()
    assert dags.dags["audit_ingest"].deadline[0].interval == timedelta(minutes=45)
    assert dags.dags["audit_daily_export"].deadline[0].interval == timedelta(hours=2, minutes=45)


def test_replay_dag_offers_the_replayable_reasons():
    from include.audit.events import REPLAYABLE

    dag = load_dags().dags["audit_quarantine_replay"]
    assert dag.schedule is None and dag.max_active_runs == 1
    reasons = dag.params.get_param("reasons").schema
    assert reasons["type"] == "array" and reasons["uniqueItems"]
    assert reasons["items"]["enum"] == list(REPLAYABLE) and "outside_retention" not in REPLAYABLE
    assert dag.params.get_param("since").schema["format"] == "date"
    assert dag.params["since"] is None


def test_replay_dag_refuses_bad_input(roots, airflow_db):
    from airflow.sdk.exceptions import AirflowFailException, ParamValidationError

    from include.audit.pipeline import replay_from_params

    dag = load_dags().dags["audit_quarantine_replay"]
    for conf in ({"reasons": ["future_timestamp"], "since": "last week"}, {"reasons": ["outside_retention"]}):
        with pytest.raises(ParamValidationError):  # the form refuses it: no run starts
            dag.test(run_conf=conf)
    with pytest.raises(AirflowFailException, match="outside_retention cannot be replayed"):
        replay_from_params({"reasons": ["outside_retention"], "since": None})  # the task's own check
    with pytest.raises(AirflowFailException, match="since 'soon' is not a date"):
        replay_from_params({"reasons": [], "since": "soon"})


# --- what runs emit ---------------------------------------------------------------------------


def test_ingest_emits_an_asset_event_with_the_run_counts(roots, airflow_db):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from include.audit.assets import ingest_extra

    now = datetime.now(UTC)
    generate(roots["raw"], events=500, days=1, organizations=2, bad_share=0.01, now=now - timedelta(minutes=1))
    run = load_dags().dags["audit_ingest"].test()
    assert run.state == "success"
    summary = run.get_task_instance("ingest_new_files").xcom_pull(task_ids="ingest_new_files")

    with create_session() as session:
        (event,) = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "audit_events", AssetEvent.source_run_id == run.run_id)
        ).all()
        extra = dict(event.extra)
    assert extra["files"] == summary["files"] > 0
    assert extra["ingested"] == summary["ingested"] == 500
    assert extra["duplicates"] == summary["duplicates"]
    assert extra["quarantined"] == summary["quarantined"] and extra["quarantined"]
    assert extra == ingest_extra(summary)  # with max_event_time and lag_seconds once ingest reports them


def test_an_asset_triggered_export_archives_the_day_before_it_ran(roots, airflow_db):
    now = datetime.now(UTC)
    expected = generate(roots["raw"], events=300, days=2, organizations=2, now=now - timedelta(minutes=1))
    dags = load_dags()
    assert dags.dags["audit_ingest"].test().state == "success"

    # an asset-triggered run has no logical date (Airflow 3), only the time it was triggered
    run = dags.dags["audit_daily_export"].test(logical_date=None, run_after=now)
    assert run.state == "success" and run.logical_date is None
    yesterday = (now - timedelta(days=1)).date()
    orgs = {o for (_, o) in expected.per_partition}  # active in the window: a heartbeat if quiet yesterday
    files = {f.name for f in Path(roots["exports"]).rglob("*.csv")}
    assert files == {f"audit-log_{org}_{yesterday}.csv" for org in orgs}

    # the next ingest brings nothing new for yesterday: the next asset-triggered run rewrites nothing
    again = dags.dags["audit_daily_export"].test(logical_date=None, run_after=now + timedelta(minutes=10))
    assert again.state == "success"
    assert again.get_task_instance("list_work").xcom_pull(task_ids="list_work") == []


# --- alerts -----------------------------------------------------------------------------------


def test_a_failing_ingest_posts_exactly_one_alert(roots, airflow_db, webhook, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value-42")
    monkeypatch.setenv("AUDIT_RAW_ROOT", "nosuchstore://very-secret-value-42/raw")  # no such protocol
    dag = load_dags().dags["audit_ingest"]
    dag.get_task("ingest_new_files").retries = 0  # the last try is what alerts; do not wait for retries

    run = dag.test()

    assert run.state == "failed"
    (message,) = webhook.received
    assert message["path"] == "/alerts" and message["type"] == "application/json"
    text = message["json"]["text"]
    assert "audit_ingest" in text and run.run_id in text and "task ingest_new_files" in text
    assert "nosuchstore" in text  # what failed, in one line
    assert "\n" not in text and "very-secret-value-42" not in text
    assert f"/dags/audit_ingest/runs/{quote(run.run_id)}/tasks/ingest_new_files" in text  # the log


def _scheduler_handles_missed_deadlines(run_id: int) -> int:
    """What the scheduler loop does with expired deadlines of one run, then what an executor runs.

    ``Deadline.handle_miss`` queues the callback and marks the deadline missed; the executor's
    callback workload then runs ``execute_callback`` (airflow.sdk.execution_time.callback_supervisor).
    Returns how many deadlines were handled.
    """
    import structlog
    from airflow.models.deadline import Deadline
    from airflow.sdk.execution_time.callback_supervisor import execute_callback
    from airflow.utils.session import create_session
    from sqlalchemy import select

    handled = 0
    with create_session() as session:
        expired = session.scalars(
            select(Deadline).where(
                Deadline.dagrun_id == run_id, Deadline.deadline_time < datetime.now(UTC), ~Deadline.missed
            )
        ).all()
        for deadline in expired:
            deadline.handle_miss(session)
            data = deadline.callback.data
            ok, error = execute_callback(data["path"], data["kwargs"], "", None, structlog.get_logger("callback"))
            assert ok, error
            handled += 1
    return handled


def _scheduled_run(dag_id: str, logical_date: datetime):
    """Create a queued run the way the scheduler does: from the DAG as the DAG processor stored it."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(load_dags(), "dags-folder", None)
    with create_session() as session:
        dag = SerializedDagModel.get_dag(dag_id, session=session)
        run = dag.create_dagrun(
            run_id=f"scheduled__{logical_date.isoformat()}",
            logical_date=logical_date,
            data_interval=(logical_date, logical_date),
            run_after=logical_date,
            run_type=DagRunType.SCHEDULED,
            triggered_by=DagRunTriggeredByType.TIMETABLE,
            state=DagRunState.QUEUED,
            session=session,
        )
        return run.id, run.run_id


def test_a_stalled_ingest_posts_exactly_one_deadline_alert(roots, airflow_db, webhook):
    from airflow.models.deadline import Deadline
    from airflow.utils.session import create_session
    from sqlalchemy import select

    due_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=35)
    run_pk, run_id = _scheduled_run("audit_ingest", due_at)  # due 35 minutes ago, never ran
    with create_session() as session:
        (deadline,) = session.scalars(select(Deadline).where(Deadline.dagrun_id == run_pk)).all()
        due = deadline.deadline_time
    assert due == due_at + timedelta(minutes=30)  # DAGRUN_LOGICAL_DATE + AUDIT_INGEST_STALE_MINUTES
    assert webhook.texts == []  # nothing before the scheduler sees the deadline

    assert _scheduler_handles_missed_deadlines(run_pk) == 1
    assert _scheduler_handles_missed_deadlines(run_pk) == 0  # marked missed: never twice

    (text,) = webhook.texts
    assert text.startswith("[audit] audit_ingest missed its deadline: ingest has not succeeded for 30 minutes")
    assert run_id in text and due.isoformat() in text and "state queued" in text
    assert f"/dags/audit_ingest/runs/{quote(run_id, safe='')}" in text


def test_a_late_archive_posts_exactly_one_deadline_alert(roots, airflow_db, webhook):
    # two days back, not one: test_dags' export run takes logical date "today 00:30" (a unique key
    # with the dag id); when the suite crosses midnight UTC, that is this test's "yesterday 00:30"
    today = datetime.now(UTC).date()
    scheduled = datetime.combine(today - timedelta(days=2), time(0, 30), UTC)  # due 02:00 two days ago
    run_pk, run_id = _scheduled_run("audit_daily_export", scheduled)
    assert _scheduler_handles_missed_deadlines(run_pk) == 1
    (text,) = webhook.texts
    assert "audit_daily_export missed its deadline: yesterday's archive is not complete by 02:00 UTC" in text
    assert run_id in text and datetime.combine(scheduled.date(), time(2), UTC).isoformat() in text


@pytest.fixture
def alert_log():
    """What the notifier logs (its own handler: Airflow's logging setup may stop propagation)."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("include.audit.alerts")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_backfill_runs_do_not_page_for_deadlines(webhook):
    from include.audit.alerts import WebhookNotifier

    late = {
        "dag_id": "audit_daily_export",
        "dag_run_id": "backfill__2026-10-01T00:30:00+00:00",
        "run_type": "backfill",
        "state": "queued",
    }
    WebhookNotifier(deadline="yesterday's archive")({"dag_run": late, "deadline": {"deadline_time": "x"}})
    assert webhook.received == []
    WebhookNotifier(deadline="yesterday's archive")(
        {"dag_run": {**late, "run_type": "scheduled"}, "deadline": {"deadline_time": "x"}}
    )
    assert len(webhook.received) == 1


def test_without_a_connection_the_alert_is_only_logged(monkeypatch, alert_log):
    from include.audit.alerts import WebhookNotifier

    monkeypatch.setenv("AUDIT_ALERTS_CONN_ID", "audit_alerts_not_configured")
    context = {"ti": None, "dag_run": {"dag_id": "audit_ingest", "dag_run_id": "manual__x"}}
    WebhookNotifier()(context)  # no exception: a notifier never fails a task
    (line,) = alert_log
    assert "audit_alerts_not_configured" in line and "alert not sent" in line


def test_an_unreachable_webhook_is_only_logged(monkeypatch, alert_log):
    import socket

    from include.audit.alerts import WebhookNotifier

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_AUDIT_ALERTS", f"http://127.0.0.1:{port}/alerts")
    WebhookNotifier(deadline="test")({"dag_run": {"dag_id": "d", "dag_run_id": "r"}, "deadline": {}})
    (line,) = alert_log
    assert line.startswith("Could not send the alert: ConnectError")


# --- the pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conn", "url"),
    [
        (("http", "127.0.0.1", "http", 8080, {"endpoint": "/alerts"}), "http://127.0.0.1:8080/alerts"),
        (("http", "127.0.0.1", "alerts", 8080, {}), "http://127.0.0.1:8080/alerts"),  # from a connection URI
        (("http", "https://hooks.slack.com/services/T/B/X", None, None, {}), "https://hooks.slack.com/services/T/B/X"),
        (
            ("https", "events.pagerduty.com", None, None, {"endpoint": "v2/enqueue"}),
            "https://events.pagerduty.com/v2/enqueue",
        ),
        (("http", None, None, None, {}), None),
    ],
)
def test_webhook_url_from_a_connection(conn, url):
    from include.audit.alerts import webhook_url

    assert webhook_url(*conn) == url


def test_connection_uri_names_the_webhook(monkeypatch):
    from include.audit.alerts import find_webhook

    monkeypatch.setenv("AIRFLOW_CONN_AUDIT_ALERTS", "http://127.0.0.1:9999/hooks/audit")
    assert find_webhook("audit_alerts") == "http://127.0.0.1:9999/hooks/audit"


def test_error_lines_are_short_single_and_secret_free(monkeypatch):
    from include.audit.alerts import MAX_ERROR_CHARS, one_line

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2-secret")
    assert one_line(ValueError("bad key hunter2-secret\nTraceback ...")) == "ValueError: bad key ***"
    assert len(one_line("x" * 1000)) == MAX_ERROR_CHARS


def test_limits_from_the_environment():
    from include.audit.dag_defaults import after, parse_minutes, parse_utc_time

    default = timedelta(minutes=30)
    assert parse_minutes("45", default) == timedelta(minutes=45)
    assert parse_minutes(None, default) == parse_minutes("-3", default) == parse_minutes("soon", default) == default
    assert parse_utc_time("03:15", time(2)) == time(3, 15) and parse_utc_time("25:00", time(2)) == time(2)
    assert after(time(0, 30), time(2)) == timedelta(hours=1, minutes=30)
    assert after(time(23, 0), time(1)) == timedelta(hours=2)


def test_export_date_of_scheduled_and_asset_triggered_runs():
    from include.audit.pipeline import export_date_for

    assert export_date_for(datetime(2026, 11, 27, 0, 30, tzinfo=UTC)) == date(2026, 11, 26)
    assert export_date_for(None, datetime(2026, 11, 27, 14, 10, tzinfo=UTC)) == date(2026, 11, 26)


def test_asset_event_extra_is_json():
    from include.audit.assets import ingest_extra

    summary = {
        "files": 2,
        "lines": 5,
        "ingested": 4,
        "duplicates": 0,
        "quarantined": {"invalid_ip": 1},
        "quarantined_total": 1,
        "batches": ["b1"],
        "validation_reports": ["r"],
        "skipped_files": 0,
        "max_event_time": datetime(2026, 11, 26, 12, tzinfo=UTC),
        "lag_seconds": 42.5,
    }
    extra = ingest_extra(summary)
    assert "batches" not in extra and "validation_reports" not in extra
    assert extra["max_event_time"] == "2026-11-26T12:00:00Z" and extra["lag_seconds"] == 42.5
    json.dumps(extra)
