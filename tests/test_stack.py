"""The production topology for real (``scripts/stack.py``, what ``make stack`` runs): PostgreSQL, Redis,
SeaweedFS, the api-server, scheduler, dag-processor, triggerer and two Celery workers on loopback.

The DAGs are driven only through Airflow's REST API (v2) with a JWT from its auth endpoint, the
way an operator or another service would; the results are read back from the S3 buckets.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from include.audit.exports import HEADER
from include.audit.generate import organization_ids
from scripts.stack import alive

pytestmark = [pytest.mark.slow, pytest.mark.stack, pytest.mark.s3, pytest.mark.airflow]

REPO = Path(__file__).resolve().parents[1]
STACK = [sys.executable, str(REPO / "scripts" / "stack.py")]
ORGS = 4
RUN_TIMEOUT = 300  # seconds for one DAG run, queued to finished
EXPECTED_HEADER = "time,organization_id,user,action,action_type,resource,ip_address,user_agent,region,event_id"


@dataclass
class Stack:
    """A running stack: what ``stack.py up`` printed plus its state folder's secrets."""

    state: Path
    info: dict
    secrets: dict

    @property
    def s3_env(self) -> dict[str, str]:
        """The standard variables a command-line user sets to reach this S3 server."""
        return {
            **os.environ,
            "AWS_ENDPOINT_URL": self.info["s3_endpoint"],
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": self.secrets["s3_key"],
            "AWS_SECRET_ACCESS_KEY": self.secrets["s3_secret"],
        }

    def root(self, name: str) -> str:
        """The stack's ``raw``, ``lake`` or ``export`` root URL."""
        return self.info["roots"][f"AUDIT_{name.upper()}_ROOT"]

    def cli(self, *args: str) -> dict:
        """Run ``python -m include.audit`` against the stack's buckets; its JSON result."""
        result = subprocess.run(
            [sys.executable, "-m", "include.audit", *args],
            env=self.s3_env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def s3(self):
        import s3fs

        return s3fs.S3FileSystem(
            key=self.secrets["s3_key"],
            secret=self.secrets["s3_secret"],
            endpoint_url=self.info["s3_endpoint"],
            skip_instance_cache=True,
        )

    def task_logs(self, run_id: str) -> str:
        """The end of every task log of ``run_id``, for a failure message."""
        logs = sorted((self.state / "airflow" / "logs").rglob("*.log"))
        return "\n".join(
            f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            for p in logs
            if f"run_id={run_id}" in str(p)
        )


def run_stack(command: str, state: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STACK, command, "--state-dir", str(state)], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """``stack.py up`` in a fresh state folder; ``down`` and cleanup afterwards, whatever happened."""
    state = Path(tempfile.mkdtemp(prefix="audit-stack-"))
    state.chmod(0o755)  # the postgres user must reach its data directory inside
    try:
        up = run_stack("up", state, timeout=480)
        assert up.returncode == 0, f"stack.py up failed:\n{up.stderr[-3000:]}"
        yield Stack(state, json.loads(up.stdout), json.loads((state / "secrets.json").read_text()))
    finally:
        run_stack("down", state, timeout=180)
        shutil.rmtree(state, ignore_errors=True)


class Api:
    """A minimal Airflow REST API v2 client holding a JWT."""

    def __init__(self, base: str, token: str) -> None:
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    @staticmethod
    def token(base: str, username: str, password: str) -> httpx.Response:
        return httpx.post(f"{base}/auth/token", json={"username": username, "password": password}, timeout=30)

    def ok(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, f"/api/v2{path}", **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def wait_until_parsed(self, dag_id: str, timeout: float = 180) -> None:
        """Poll until the dag-processor has put ``dag_id`` in the database."""
        deadline = time.monotonic() + timeout
        while self.http.get(f"/api/v2/dags/{dag_id}").status_code != 200:
            assert time.monotonic() < deadline, f"{dag_id} was not parsed within {timeout}s"
            time.sleep(1)

    def trigger(self, dag_id: str, logical_date: datetime | None = None, conf: dict | None = None) -> str:
        """Trigger ``dag_id`` (unpausing it, as an operator would); returns the run id."""
        self.wait_until_parsed(dag_id)
        body = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": conf or {}}
        run = self.ok("POST", f"/dags/{dag_id}/dagRuns", json=body)
        self.ok("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        return run["dag_run_id"]

    def wait(self, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
        """Poll a run until it finishes; its final state."""
        deadline = time.monotonic() + timeout
        while (state := self.ok("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]) not in ("success", "failed"):
            assert time.monotonic() < deadline, f"{dag_id} {run_id} still {state} after {timeout}s"
            time.sleep(1)
        return state

    def result(self, dag_id: str, run_id: str, task_id: str) -> object:
        """A task's return value (its XCom)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.ok("GET", path, params={"deserialize": True})["value"]


@pytest.fixture(scope="module")
def api(stack: Stack) -> Api:
    password = json.loads(Path(stack.info["api_password_file"]).read_text())[stack.info["api_user"]]
    response = Api.token(stack.info["api_url"], stack.info["api_user"], password)
    assert response.status_code == 201, response.text
    return Api(stack.info["api_url"], response.json()["access_token"])


def finished(api: Api, stack: Stack, dag_id: str, run_id: str) -> None:
    """Assert that the run succeeded, showing its task logs if not."""
    state = api.wait(dag_id, run_id)
    assert state == "success", f"{dag_id} {run_id} {state}\n{stack.task_logs(run_id)}"


def readme_walkthrough() -> list[str]:
    """The README's ``make stack`` walkthrough: the commands between ``make stack`` and ``make stack-down``."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("```bash\nmake stack\n") :].split("```")[1]
    lines = [line for line in block.splitlines()[1:] if line.strip()]
    assert lines[0] == "make stack" and lines[-1] == "make stack-down", lines
    return lines[1:-1]


@pytest.fixture(scope="module")
def ingested(stack: Stack, api: Api) -> dict:
    """The README walkthrough, verbatim but for the state folder: two days of generated raw events in
    the raw bucket, loaded by ``airflow dags trigger audit_ingest``; what ``status`` then prints."""
    setup, *commands = (line.replace(".stack/", f"{stack.state}/") for line in readme_walkthrough())
    assert setup.startswith("set -a; . ") and "airflow.env" in setup
    api.wait_until_parsed("audit_ingest")
    outputs = []
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", f"{setup}\n{command}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env={k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AUDIT_", "AWS_"))},
        )
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
        if "dags trigger audit_ingest" in command:  # the walkthrough's "until its state is success"
            for run in api.ok("GET", "/dags/audit_ingest/dagRuns")["dag_runs"]:
                finished(api, stack, "audit_ingest", run["dag_run_id"])
    generated = json.loads(outputs[next(i for i, c in enumerate(commands) if " generate " in c)])
    status = json.loads(outputs[-1])
    assert "include.audit status" in commands[-1]
    return {"generated": generated, "status": status}


def export_day() -> datetime:
    """The last complete UTC day: the one a daily-export run triggered just after midnight exports."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


def read_csv(fs, path: str) -> tuple[str, list[list[str]]]:
    text = fs.cat_file(path).decode()
    header, _, _ = text.partition("\n")
    return header, list(csv.reader(io.StringIO(text)))[1:]


def test_api_refuses_requests_without_a_valid_token(stack: Stack) -> None:
    base = stack.info["api_url"]
    assert httpx.get(f"{base}/api/v2/dags", timeout=30).status_code == 401
    assert Api.token(base, stack.info["api_user"], "wrong-password").status_code == 401


def test_every_component_reports_healthy(api: Api) -> None:
    health = api.ok("GET", "/monitor/health")
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health


def process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_every_server_of_the_stack_listens_on_loopback_only(stack: Stack) -> None:
    groups = {service["pid"]: name for name, service in stack.info["services"].items()}
    listening = {
        (groups[group], conn.laddr.ip, conn.laddr.port)
        for conn in psutil.net_connections("inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid and (group := process_group(conn.pid)) in groups
    }
    assert {"airflow-apiserver", "seaweedfs", "redis", "postgres"} <= {name for name, _, _ in listening}
    assert all(ip == "127.0.0.1" for _, ip, _ in listening), sorted(listening)


def test_ingest_run_loads_every_valid_event_into_the_s3_lake(ingested: dict) -> None:
    assert ingested["generated"]["valid_events"] > 0
    assert ingested["status"]["events"] == ingested["generated"]["valid_events"]


def test_daily_export_run_writes_one_csv_per_organization_to_s3(stack: Stack, api: Api, ingested: dict) -> None:
    """Each organization's latest version of the day holds all its rows. The DAGs start unpaused, so a
    scheduled ingest can commit part of the raw files while they are still being generated, and the
    asset-triggered export then archives that part first (possibly none of an organization's rows yet):
    earlier versions are allowed, and each must be a strict subset of the next (events are only
    appended; the same rows never make a new version)."""
    day = export_day()
    run_id = api.trigger("audit_daily_export", logical_date=day + timedelta(days=1, seconds=1))
    finished(api, stack, "audit_daily_export", run_id)
    fs = stack.s3()
    versions: dict[str, dict[int, list[list[str]]]] = {}
    for path in fs.glob(f"{stack.root('export')}/*/{day:%Y/%m/%d}/*.csv"):
        org = path.split("/")[2]
        name = re.fullmatch(rf"audit-log_{org}_{day:%Y-%m-%d}(?:\.v(\d+))?\.csv", path.rsplit("/", 1)[1])
        assert name, path
        header, body = read_csv(fs, path)
        assert header == EXPECTED_HEADER == HEADER
        assert {row[1] for row in body} <= {org}  # an earlier version may have none of the day's rows yet
        versions.setdefault(org, {})[int(name[1] or 1)] = body
    assert sorted(versions) == sorted(organization_ids(ORGS))
    rows = 0
    for org, bodies in versions.items():
        numbers = sorted(bodies)
        assert numbers == list(range(1, len(numbers) + 1)), (org, numbers)
        assert bodies[numbers[-1]], org  # the latest version holds the organization's rows
        for older, newer in itertools.pairwise(numbers):
            assert {tuple(r) for r in bodies[older]} < {tuple(r) for r in bodies[newer]}, (org, older, newer)
        rows += len(bodies[numbers[-1]])
    assert rows == ingested["status"]["events_per_date"][f"{day:%Y-%m-%d}"]


def test_on_demand_export_run_writes_what_the_command_line_writes(
    stack: Stack, api: Api, ingested: dict, tmp_path: Path
) -> None:
    day, org = export_day(), organization_ids(ORGS)[0]
    conf = {"organization": org, "start": f"{day:%Y-%m-%d}T00:00:00Z", "end": f"{day:%Y-%m-%d}T23:59:59.999999Z"}
    run_id = api.trigger("audit_export_on_demand", conf=conf)
    finished(api, stack, "audit_export_on_demand", run_id)
    result = api.result("audit_export_on_demand", run_id, "export_csv")
    assert result["path"].startswith(f"{stack.root('export')}/_on-demand/{org}/")
    fs = stack.s3()
    header, body = read_csv(fs, result["path"])
    assert header == EXPECTED_HEADER
    assert len(body) == result["rows"] > 0 and {row[1] for row in body} == {org}
    expected = tmp_path / "expected.csv"
    stack.cli(
        "export",
        "--lake-root",
        stack.root("lake"),
        "--org",
        org,
        "--start",
        conf["start"],
        "--end",
        conf["end"],
        "--out",
        str(expected),
    )
    assert fs.cat_file(result["path"]) == expected.read_bytes()


def test_a_second_up_on_a_running_stack_is_refused(stack: Stack) -> None:
    again = run_stack("up", stack.state, timeout=60)
    assert again.returncode == 1 and "already running" in again.stderr
    assert all(alive(service["pid"]) for service in stack.info["services"].values())


def test_stack_down_stops_everything_it_started(stack: Stack) -> None:
    down = run_stack("down", stack.state, timeout=180)
    assert down.returncode == 0, down.stderr
    services = json.loads(down.stdout)["services"]
    assert len(services) == 9  # postgres, redis, seaweedfs, api-server, scheduler, dag-processor, triggerer, 2 workers
    for name, service in services.items():
        assert not service["running"] and not alive(service["pid"]), name
    with pytest.raises(httpx.ConnectError):
        httpx.get(stack.info["api_url"], timeout=5)
