"""Inside Airflow, S3 credentials come from the ``audit_s3`` connection; they never reach output or XCom."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from include.audit.connections import s3_options, secrets_of
from include.audit.generate import generate

from .s3_server import ACCESS_KEY, SECRET_KEY, SeaweedS3

REPO = Path(__file__).resolve().parents[1]
AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


def test_connection_fields_become_s3fs_options() -> None:
    options = s3_options(
        "AK", "SK", {"endpoint_url": "http://127.0.0.1:1", "region_name": "eu-west-1", "aws_session_token": "TOK"}
    )
    assert options == {
        "key": "AK",
        "secret": "SK",
        "token": "TOK",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:1", "region_name": "eu-west-1"},
    }
    assert secrets_of(options) == ["AK", "SK", "TOK"]
    assert s3_options(None, None, {}) == {}  # e.g. an IAM role: boto's own chain decides


def test_no_airflow_import_outside_airflow() -> None:
    code = (
        "import sys, include.audit.pipeline as p, include.audit.connections as c;"
        "c.airflow_connection_options('audit_s3'); print('airflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.fixture
def connection_only(s3_server: SeaweedS3, s3_prefix: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """S3 roots in AUDIT_*, credentials only in AIRFLOW_CONN_AUDIT_S3 (the AWS_* variables unset)."""
    roots = {name: f"{s3_prefix}/{name}" for name in ("raw", "lake", "exports")}
    generate(roots["raw"], events=400, days=2, organizations=2, now=datetime.now(UTC) - timedelta(minutes=1))
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUDIT_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": ACCESS_KEY,
                "password": SECRET_KEY,
                "extra": {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"},
            }
        ),
    )
    for name, url in roots.items():
        monkeypatch.setenv(f"AUDIT_{name.upper().removesuffix('S')}_ROOT", url)
    return roots


@pytest.mark.s3
@pytest.mark.airflow
def test_dags_reach_s3_through_the_connection(connection_only, airflow_db, capfd, caplog) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.renderedtifields import RenderedTaskInstanceFields

    from include.audit import pipeline

    dagbag = DagBag(dag_folder=str(REPO / "dags"))
    run = dagbag.dags["audit_ingest"].test()
    assert run.state == "success"
    (ti,) = run.get_task_instances()
    summary = ti.xcom_pull(task_ids="ingest_new_files")
    assert summary["ingested"] == 400
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    work = [w for w in pipeline.archive_work(yesterday) if w["day"] == yesterday.isoformat()]
    exported = [pipeline.export_organization_day(yesterday, w["organization_id"]) for w in work]
    assert exported and all(r["path"].startswith(connection_only["exports"]) for r in exported)

    out, err = capfd.readouterr()
    seen = json.dumps(summary) + json.dumps(exported) + out + err + caplog.text
    seen += json.dumps(RenderedTaskInstanceFields.get_templated_fields(ti), default=str)
    assert SECRET_KEY not in seen and ACCESS_KEY not in seen


def test_api_roots_take_s3_credentials_from_the_airflow_connection(monkeypatch):
    """The Audit Logs API runs in the api-server, where S3 credentials come only from the connection."""
    import airflow  # noqa: F401  (inside Airflow, as the api-server is)

    from include.audit.connections import open_root
    from include.audit.storage import redact

    monkeypatch.setenv(
        "AIRFLOW_CONN_AUDIT_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "api-access-key",
                "password": "api-secret-key-value",
                "extra": {"endpoint_url": "http://127.0.0.1:9"},
            }
        ),
    )
    root = open_root("s3://audit-lake/lake")
    assert root.fs.key == "api-access-key" and root.fs.secret == "api-secret-key-value"
    assert root.fs.client_kwargs["endpoint_url"] == "http://127.0.0.1:9"
    assert "api-secret-key-value" not in redact("boom: api-secret-key-value")
    assert open_root("/tmp/x").is_local
