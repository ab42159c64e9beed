"""The first hour of a newcomer: make test's system packages, and a test run that leaves /tmp clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PACKAGES = REPO / "scripts" / "system-packages.sh"


def fake_bin(folder: Path, programs: dict[str, str]) -> str:
    """A PATH whose first folder holds these tiny shell programs (name -> body)."""
    folder.mkdir()
    for name, body in programs.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return os.pathsep.join([str(folder), os.environ["PATH"]])


def test_missing_packages_without_root_stop_with_the_exact_command(tmp_path: Path) -> None:
    path = fake_bin(
        tmp_path / "bin", {"id": "echo 1000", "dpkg-query": "exit 1", "apt-get": f"touch {tmp_path}/apt-ran"}
    )
    result = subprocess.run(
        ["bash", str(SYSTEM_PACKAGES)], env={**os.environ, "PATH": path}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "apt-get install -y -qq --no-install-recommends chromium chromium-driver" in line
    assert "postgresql redis-server" in line
    assert not (tmp_path / "apt-ran").exists()


def test_missing_packages_as_root_are_installed_quietly(tmp_path: Path) -> None:
    log = tmp_path / "apt.log"
    path = fake_bin(
        tmp_path / "bin",
        {
            "id": "echo 0",
            "dpkg-query": 'case "$*" in *redis-server*) echo "install ok installed";; *) exit 1;; esac',
            "apt-get": f'echo "$*" >> {log}; echo noise',
        },
    )
    result = subprocess.run(
        ["bash", str(SYSTEM_PACKAGES)], env={**os.environ, "PATH": path}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    update, install = log.read_text().splitlines()
    assert update == "update -qq"
    assert install.endswith("chromium chromium-driver fonts-liberation fonts-dejavu-core postgresql")


def test_nothing_missing_installs_nothing(tmp_path: Path) -> None:
    path = fake_bin(
        tmp_path / "bin",
        {"id": "echo 0", "dpkg-query": 'echo "install ok installed"', "apt-get": f"touch {tmp_path}/apt-ran"},
    )
    result = subprocess.run(
        ["bash", str(SYSTEM_PACKAGES)], env={**os.environ, "PATH": path}, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not (tmp_path / "apt-ran").exists()


def test_a_test_session_leaves_no_airflow_home_in_tmp(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", f"--basetemp={tmp_path}/bt", "tests/test_catalog.py"],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(tmp.iterdir()) == []
