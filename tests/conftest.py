"""Shared fixtures. Airflow is configured here, before any test imports it: a throwaway
AIRFLOW_HOME with SQLite, this repository's dags/ and plugins/, and no example DAGs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytest_plugins = ["tests.s3_server"]  # the SeaweedFS S3 server fixtures

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="audit-airflow-")
os.environ.update(
    {
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
        "GX_ANALYTICS_ENABLED": "false",
    }
)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
S3_FIXTURES = {"s3_server", "s3_env", "s3_prefix"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the session's S3 server is an ``s3`` test, marked or not (``make test-fast``)."""
    for item in items:
        if S3_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.s3)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove this process's throwaway AIRFLOW_HOME: a test run leaves nothing in /tmp."""
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture
def now() -> datetime:
    """A fixed ingest time, so date-relative rules give the same answer every day."""
    return NOW


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fresh local raw, lake and export roots, also exported as the AUDIT_* variables."""
    paths = {name: str(tmp_path / name) for name in ("raw", "lake", "exports")}
    monkeypatch.setenv("AUDIT_RAW_ROOT", paths["raw"])
    monkeypatch.setenv("AUDIT_LAKE_ROOT", paths["lake"])
    monkeypatch.setenv("AUDIT_EXPORT_ROOT", paths["exports"])
    return paths


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated Airflow metadata database (SQLite) for dag.test()."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ.copy()
    )
    with pytest.MonkeyPatch.context() as patch:
        _test_runs_keep_deadlines_in_the_database(patch)
        yield _AIRFLOW_HOME


def _test_runs_keep_deadlines_in_the_database(patch: pytest.MonkeyPatch) -> None:
    """Work around Airflow 3.3.2's ``DAG.test()`` for DAGs with a ``DeadlineAlert``.

    ``DAG.test()`` schedules a copy of the DAG deserialized in memory, whose ``deadline`` holds the
    encoded alerts where the scheduler's DB copy holds their ids; on success ``DagRun.update_state``
    looks those up as ids and fails. The in-memory alerts are hidden for the call, so test runs
    get no deadlines; the scheduler is not affected, and tests/test_operations.py creates runs
    from the DB copy, as the scheduler does, to exercise them.
    """
    from airflow.sdk.definitions.dag import DAG

    original = DAG.test

    def test(self, *args, **kwargs):
        alerts, self.deadline = self.deadline, None
        try:
            return original(self, *args, **kwargs)
        finally:
            self.deadline = alerts

    patch.setattr(DAG, "test", test)
