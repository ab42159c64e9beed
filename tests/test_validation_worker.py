"""Great Expectations runs in a worker process of its own: the ingest process never imports it, a
worker that dies is replaced for the same batch, an error inside GE fails only that batch, and the
worker never outlives the process that started it. Workers are forked by a validation server that
imports GE once per host: runs share it, it answers only its own user and its own code, and it
exits when idle."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

from include.audit.events import Window
from include.audit.generate import generate
from include.audit.ingest import ingest
from include.audit.storage import Root
from include.audit.validation import WORKER, WorkerError, validate_batch

REPO = Path(__file__).resolve().parents[1]


def lake_rows(roots: dict[str, str], now) -> pl.DataFrame:
    generate(roots["raw"], events=60, days=1, organizations=2, now=now, seed=4)
    ingest(roots["raw"], roots["lake"], now=now)
    return pl.read_delta(str(Path(roots["lake"]) / "events"))


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def test_the_ingest_process_never_imports_great_expectations(roots, now):
    script = (
        "import json, sys\n"
        "from datetime import datetime\n"
        "from include.audit.generate import generate\n"
        "from include.audit.ingest import ingest\n"
        f"now = datetime.fromisoformat({now.isoformat()!r})\n"
        f"generate({roots['raw']!r}, events=80, days=1, organizations=2, now=now)\n"
        f"summary = ingest({roots['raw']!r}, {roots['lake']!r}, now=now)\n"
        "print(json.dumps([summary.ingested, summary.validation_reports, 'great_expectations' in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ
    )
    assert done.returncode == 0, done.stderr
    ingested, reports, imported = json.loads(done.stdout)
    assert ingested == 80 and not imported
    (report,) = reports
    assert "audit_events" in Path(report).read_text()  # the worker's page, written by the ingest process


def test_a_killed_worker_is_replaced_for_the_same_batch(roots, now):
    accepted = lake_rows(roots, now)
    WORKER.start()
    first = WORKER.process.pid
    os.kill(first, signal.SIGKILL)
    assert gone(first, 10)
    report = validate_batch(Root.open(roots["lake"]), accepted, Window(now), "20261126T120000Z-00000001")
    assert report.success and Path(report.html_path).exists()
    assert WORKER.process.pid != first


def test_an_error_inside_great_expectations_fails_only_that_batch(roots, now):
    accepted = lake_rows(roots, now)
    lake = Root.open(roots["lake"])
    with pytest.raises(WorkerError, match="action"):
        validate_batch(lake, accepted.drop("action"), Window(now), "20261126T120000Z-00000002")
    pid = WORKER.process.pid
    assert validate_batch(lake, accepted, Window(now), "20261126T120000Z-00000003").success
    assert WORKER.process.pid == pid  # the same worker went on


def test_the_worker_never_runs_the_modules_it_defers(roots, now):
    accepted = lake_rows(roots, now)
    assert validate_batch(Root.open(roots["lake"]), accepted, Window(now), "20261126T120000Z-00000004").success
    maps = Path(f"/proc/{WORKER.process.pid}/maps").read_text()
    assert "/scipy/_lib/" in maps  # SciPy itself is loaded (GE imports it) ...
    assert "/scipy/stats/" not in maps  # ... but SciPy's statistics never ran


def test_a_deferred_module_loads_when_used():
    script = (
        "import sys\n"
        "from include.audit.validation import DEFERRED_IMPORTS, _DeferredImports\n"
        "sys.meta_path.insert(0, _DeferredImports(DEFERRED_IMPORTS))\n"
        "import scipy.stats, altair\n"
        "ran = ['scipy.stats._distn_infrastructure' in sys.modules, 'altair.vegalite' in sys.modules]\n"
        "print(ran, scipy.stats.norm.cdf(0.0), altair.Chart.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[False,", "False]", "0.5", "Chart"]


def test_the_worker_exits_when_its_ingest_process_is_killed():
    script = (
        "import sys, time\n"
        "from include.audit.validation import WORKER\n"
        "WORKER.start()\n"
        "print(WORKER.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        assert psutil.pid_exists(worker)
    finally:
        parent.kill()
        parent.wait()
    assert gone(worker, 60), "the worker outlived its ingest process"


WORKER_OF_A_RUN = (
    "import os, psutil\n"
    "from include.audit.validation import WORKER\n"
    "WORKER.start()\n"
    "worker = psutil.Process(WORKER.process.pid)\n"
    "print(os.getpid(), worker.pid, worker.ppid(), ' '.join(worker.parent().cmdline()), flush=True)\n"
)


def run_worker(tmp: Path, idle: str) -> tuple[int, int, str, int]:
    """Start a worker in a run (a process) of its own with TMPDIR ``tmp``: the worker's pid, its
    parent's, the parent's command, and the run's pid."""
    env = {**os.environ, "TMPDIR": str(tmp), "AUDIT_VALIDATION_SERVER_IDLE_SECONDS": idle}
    done = subprocess.run(
        [sys.executable, "-c", WORKER_OF_A_RUN], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    run, pid, parent, command = done.stdout.strip().split(" ", 3)
    return int(pid), int(parent), command, int(run)


@pytest.fixture
def short_tmp():
    """A temporary directory with a short path (a Unix socket's path is at most 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ge-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_runs_share_one_validation_server_which_exits_when_idle(short_tmp):
    tmp_path = short_tmp
    first, server, command, _ = run_worker(tmp_path, "4")
    assert "serve_forks" in command
    second, same_server, _, _ = run_worker(tmp_path, "4")
    assert same_server == server and second != first  # GE imported once, a fresh worker per run
    assert gone(first, 10) and gone(second, 10)  # each worker ended with its run
    (socket_path,) = (tmp_path / f"audit-ge-{os.getuid()}").glob("*.sock")
    assert gone(server, 60), "the server outlived its idle time"
    assert not socket_path.exists()
    _, new_server, _, _ = run_worker(tmp_path, "4")  # the next run starts a new one
    assert new_server != server and gone(new_server, 60)


def test_no_server_when_turned_off_or_when_its_folder_is_not_private(short_tmp):
    tmp_path = short_tmp
    _, parent, _, run = run_worker(tmp_path, "0")
    assert parent == run  # the run's own child
    shared = tmp_path / "shared"
    (shared / f"audit-ge-{os.getuid()}").mkdir(parents=True, mode=0o777)
    os.chmod(shared / f"audit-ge-{os.getuid()}", 0o777)  # others could plant a server there
    _, parent, _, run = run_worker(shared, "5")
    assert parent == run
    assert not list((shared / f"audit-ge-{os.getuid()}").iterdir())


def test_a_dead_servers_socket_is_replaced(short_tmp):
    tmp_path = short_tmp
    _, server, _, _ = run_worker(tmp_path, "30")
    os.kill(server, signal.SIGKILL)
    assert gone(server, 10)
    (socket_path,) = (tmp_path / f"audit-ge-{os.getuid()}").glob("*.sock")
    assert socket_path.exists()  # left behind: nobody listens there any more
    _, new_server, command, _ = run_worker(tmp_path, "30")
    assert new_server != server and "serve_forks" in command
    os.kill(new_server, signal.SIGTERM)


def test_a_stopped_server_never_stops_a_run(short_tmp):
    _, server, _, _ = run_worker(short_tmp, "60")
    os.kill(server, signal.SIGSTOP)  # it accepts no more: a run waits HANDSHAKE_SECONDS, then starts another
    try:
        started = time.monotonic()
        _, new_server, command, _ = run_worker(short_tmp, "60")
        assert new_server != server and "serve_forks" in command
        assert time.monotonic() - started < 120
    finally:
        os.kill(server, signal.SIGKILL)
    _, same, _, _ = run_worker(short_tmp, "60")
    assert same == new_server  # the new server took the socket
    os.kill(new_server, signal.SIGTERM)
