"""The benchmark harness's own pieces: GNU time's peak memory, one-file datasets, usage errors."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
run = sys.modules["bench_run"] = importlib.util.module_from_spec(_SPEC)  # dataclasses look their module up
_SPEC.loader.exec_module(run)


@pytest.fixture()
def data(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(run, "DATA", tmp_path)
    return tmp_path


def test_run_measured_reports_the_commands_own_peak_memory(data):
    touch_300_mib = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    sample = run.run_measured([sys.executable, "-c", touch_300_mib])
    assert sample.wall_s > 0 and not sample.capped
    assert 300 <= sample.peak_mib < 1000
    assert 0 < sample.cpu_s < 60


def test_run_measured_counts_the_cpu_of_the_whole_process_tree(data):
    spin = "import time\nend = time.process_time() + 1.5\nwhile time.process_time() < end: pass"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {spin!r}], check=True)"
    sample = run.run_measured([sys.executable, "-c", child])
    assert sample.cpu_s >= 1.4  # the child's spin, counted through its parent


def test_run_measured_kills_a_command_past_the_memory_cap(data):
    grow = (
        "import time\nb = []\nwhile True:\n"
        "    b.append(bytearray(50 * 2**20)); b[-1][::4096] = b'x' * 12800; time.sleep(0.05)"
    )
    sample = run.run_measured([sys.executable, "-c", grow], cap_mib=400)
    assert sample.capped
    assert 400 < sample.peak_mib < 2000
    assert sample.wall_s < 60
    assert 0 < sample.cpu_s < 60  # what GNU time saw up to the kill, not a made-up zero


def test_run_measured_stops_with_the_commands_error(data):
    with pytest.raises(SystemExit, match="boom"):
        run.run_measured([sys.executable, "-c", "raise SystemExit('boom')"])


def test_one_file_joins_every_part_once_and_is_cached(data):
    source = data / "raw"
    (source / "2026" / "11").mkdir(parents=True)
    (source / "2026" / "11" / "a.jsonl.gz").write_bytes(gzip.compress(b'{"n": 1}\n{"n": 2}\n'))
    (source / "2026" / "11" / "b.jsonl").write_bytes(b'{"n": 3}\n')
    folder = run.one_file("joined", source, ".jsonl.gz")
    assert [p.name for p in folder.iterdir()] == ["events.jsonl.gz"]
    assert gzip.decompress((folder / "events.jsonl.gz").read_bytes()) == b'{"n": 1}\n{"n": 2}\n{"n": 3}\n'
    (source / "2026" / "11" / "c.jsonl").write_bytes(b'{"n": 4}\n')
    assert run.one_file("joined", source, ".jsonl.gz") == folder
    assert b'"n": 4' not in gzip.decompress((folder / "events.jsonl.gz").read_bytes())


@pytest.mark.parametrize("argv", [["--events", "0"], ["--runs", "-1"], ["--big-file-events", "many"]])
def test_bad_arguments_are_one_line_and_exit_2(argv):
    done = subprocess.run(
        [sys.executable, "bench/run.py", *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("run.py: error: argument")
