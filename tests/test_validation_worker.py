"""Great Expectations runs in a worker process of its own: the ingest process never imports it, a
worker that dies is replaced for the same batch, an error inside GE fails only that batch, and the
worker never outlives the process that started it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
