"""A real ``airflow api-server`` with this repository's plugin, for end-to-end tests (browser, load).

Runs on a free loopback port with a migrated SQLite database in its own AIRFLOW_HOME, the
SimpleAuthManager with one Admin (``admin`` / PASSWORD) and the AUDIT_* roots it is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from scripts.devservices import free_port

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "audit-e2e-password"
START_SECONDS = 240


def wait_until_up(url: str, server: subprocess.Popen, log: Path) -> None:
    """Poll ``url`` until it answers; fail with the server's log if it dies or never answers."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"api-server exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"api-server did not answer {url} in {START_SECONDS}s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def api_server(home: Path, roots: Mapping[str, str], env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Start the api-server (log: ``home/api-server.log``), yield its base URL, stop its process group."""
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({"admin": PASSWORD}))
    (home / "dags").mkdir(exist_ok=True)
    port = free_port()
    environment = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "e2e-jwt-secret-" + "s" * 64,
        "AIRFLOW__API__SECRET_KEY": "e2e-secret-key",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AUDIT_RAW_ROOT": roots["raw"],
        "AUDIT_LAKE_ROOT": roots["lake"],
        "AUDIT_EXPORT_ROOT": roots["exports"],
        "PYTHONPATH": str(REPO),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        **(env or {}),
    }
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=environment, check=True, capture_output=True)
    log = home / "api-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/audit-logs/", proc, log)
        yield base
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def bearer_token(base: str) -> str:
    """A JWT for the Admin, from the api-server's token endpoint."""
    request = urllib.request.Request(
        f"{base}/auth/token",
        method="POST",
        data=json.dumps({"username": "admin", "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["access_token"]
