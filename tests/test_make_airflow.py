"""``make airflow`` (scripts/airflow_local.py): healthy on loopback only, sized to the machine, and a
SIGTERM or Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from scripts.airflow_local import healthy, parallelism
from scripts.devservices import free_port

REPO = Path(__file__).resolve().parents[1]
START_SECONDS = 300

pytestmark = [pytest.mark.slow, pytest.mark.airflow]


def tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def listening(processes: list[psutil.Process]) -> set[str]:
    found = set()
    for process in processes:
        try:
            found |= {c.laddr.ip for c in process.net_connections() if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_make_airflow_runs_on_loopback_and_a_signal_stops_everything(tmp_path, stop_signal):
    port = free_port()
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home")}
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)  # its own SQLite database in its own home
    env.pop("AIRFLOW__CORE__PARALLELISM", None)
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "scripts/airflow_local.py", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + START_SECONDS
        while not ("ready:" in log.read_text() and healthy(f"http://127.0.0.1:{port}")):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(2)
        time.sleep(3)  # let the LocalExecutor workers and the triggerer's supervisor come up
        started = tree(process.pid)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "scheduler" in names and "triggerer" in names and "dag-processor" in names
        assert listening(started) == {"127.0.0.1"}
        workers = [p for p in started if "LocalExecutor" in " ".join(p.cmdline())]
        assert len(workers) == parallelism() == max(2, os.cpu_count() or 2)

        stopped_at = time.monotonic()
        process.send_signal(stop_signal)
        assert process.wait(timeout=60) == 0, log.read_text()
        assert time.monotonic() - stopped_at < 45
        assert "stopped" in log.read_text().splitlines()[-1]
        left = [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == []
    finally:
        if process.poll() is None:
            process.kill()
        for p in started:
            if p.is_running():
                p.kill()
