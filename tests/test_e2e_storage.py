"""The whole scenario through the command line, on local disk and on a real S3 server, same assertions.

generate -> ingest -> export-daily -> on-demand export -> retain; every valid event exactly once in
the lake and in its export, quarantine per reason as generated, and reruns write nothing new.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from .s3_server import ACCESS_KEY, SECRET_KEY
from .storage_checks import (
    Storage,
    assert_exactly_once,
    export_event_ids,
    export_every_day,
    lake_dates,
    lake_event_ids,
    listing,
    run_cli,
)

REPO = Path(__file__).resolve().parents[1]
NOW_ARG = "2026-11-26T12:00:00Z"

pytestmark = pytest.mark.slow


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Fresh raw, lake and export roots: local directories, or prefixes in the SeaweedFS bucket."""
    if request.param == "local":
        base = str(tmp_path)
    else:
        base = request.getfixturevalue("s3_prefix")
    return Storage(request.param, f"{base}/raw", f"{base}/lake", f"{base}/exports")


def test_scenario_exactly_once(storage: Storage, capsys: pytest.CaptureFixture) -> None:
    code, expected, err = run_cli(
        capsys,
        "generate",
        "--raw-root",
        storage.raw,
        "--events",
        "3000",
        "--days",
        "6",
        "--orgs",
        "6",
        "--now",
        NOW_ARG,
        "--no-gzip",
    )
    assert code == 0, err
    code, summary, err = run_cli(
        capsys, "ingest", "--raw-root", storage.raw, "--lake-root", storage.lake, "--now", NOW_ARG, "--batch-mb", "1"
    )
    assert code == 0, err
    assert len(summary["batches"]) >= 2  # 1 MB batches: the ledger and dedupe work across batches
    assert summary["ingested"] == expected["valid_events"]
    assert summary["duplicates"] == expected["redeliveries"]
    assert summary["quarantined"] == expected["bad"]

    assert export_every_day(capsys, storage) == expected["valid_events"]
    assert_exactly_once(storage, expected["valid_events"])

    # on-demand export of one organization's whole range
    org = "acme-001"
    out = f"{storage.exports}/adhoc/{org}.csv"
    code, result, err = run_cli(
        capsys,
        "export",
        "--lake-root",
        storage.lake,
        "--org",
        org,
        "--start",
        "2026-11-01T00:00:00Z",
        "--end",
        NOW_ARG,
        "--out",
        out,
    )
    assert code == 0, err
    on_demand = export_event_ids(storage.exports, on_demand=True)
    assert result["rows"] == on_demand.len() == on_demand.n_unique() > 0
    assert set(on_demand) < set(lake_event_ids(storage.lake))

    # reruns find nothing new and write nothing
    before = {**listing(storage.lake), **listing(storage.exports)}
    code, again, err = run_cli(
        capsys, "ingest", "--raw-root", storage.raw, "--lake-root", storage.lake, "--now", NOW_ARG, "--batch-mb", "1"
    )
    assert code == 0, err
    assert again["ingested"] == again["duplicates"] == again["quarantined_total"] == 0
    assert again["skipped_files"] == expected["files"]
    assert export_every_day(capsys, storage) == 0
    assert {**listing(storage.lake), **listing(storage.exports)} == before

    # retention drops the exported partitions older than 3 days; their CSVs stay in the archive
    dates = lake_dates(storage.lake)
    code, retained, err = run_cli(
        capsys,
        "retain",
        "--lake-root",
        storage.lake,
        "--export-root",
        storage.exports,
        "--today",
        "2026-11-26",
        "--days",
        "3",
    )
    assert code == 0, err
    cutoff = datetime(2026, 11, 23).date()
    assert {d.split("/")[0] for d in retained["dropped"]} == {d.isoformat() for d in dates if d < cutoff}
    assert retained["kept"] == {}
    assert lake_dates(storage.lake) == [d for d in dates if d >= cutoff]
    assert export_event_ids(storage.exports).len() == expected["valid_events"]

    code, status, err = run_cli(capsys, "status", "--lake-root", storage.lake, "--export-root", storage.exports)
    assert code == 0, err
    assert status["events"] == lake_event_ids(storage.lake).len()
    assert status["quarantined"] == expected["bad"]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "include.audit", "-v", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


@pytest.mark.s3
def test_no_command_prints_a_secret(s3_prefix: str, s3_env: dict[str, str], tmp_path: Path) -> None:
    """Every command, verbose, on S3 (and failing ones): stdout and stderr never hold a credential."""
    raw, lake, exports = (f"{s3_prefix}/{n}" for n in ("raw", "lake", "exports"))
    day = (datetime(2026, 11, 26) - timedelta(days=1)).date().isoformat()
    runs = [
        ["generate", "--raw-root", raw, "--events", "300", "--days", "2", "--orgs", "2", "--now", NOW_ARG],
        ["ingest", "--raw-root", raw, "--lake-root", lake, "--now", NOW_ARG],
        ["export-daily", "--lake-root", lake, "--export-root", exports, "--date", day],
        [
            "export",
            "--lake-root",
            lake,
            "--org",
            "acme-001",
            "--start",
            "2026-11-20T00:00:00Z",
            "--end",
            NOW_ARG,
            "--out",
            f"{exports}/adhoc/x.csv",
        ],
        ["retain", "--lake-root", lake, "--export-root", exports, "--today", "2026-11-26"],
        ["status", "--lake-root", lake, "--export-root", exports],
    ]
    outputs = []
    for args in runs:
        done = _cli(*args, env=s3_env)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
    wrong_secret = _cli(
        "status",
        "--lake-root",
        lake,
        "--export-root",
        exports,
        env={**s3_env, "AWS_SECRET_ACCESS_KEY": SECRET_KEY[::-1]},
    )
    no_server = _cli(
        "ingest", "--raw-root", raw, "--lake-root", lake, env={**s3_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    )
    for failed in (wrong_secret, no_server):
        assert failed.returncode == 1
        last = failed.stderr.strip().splitlines()[-1]
        assert last.startswith("error: object storage at http://127.0.0.1:") and "Traceback" not in failed.stderr
        outputs.append(failed.stdout + failed.stderr)
    for text in outputs:
        for secret in (SECRET_KEY, SECRET_KEY[::-1], ACCESS_KEY):
            assert secret not in text
