"""Faults the storage must survive; each test ends with every valid event exactly once in lake and export.

1. the S3 server is killed mid-ingest; 2. a fault proxy injects 503 SlowDown, resets and slow answers,
or fails the first try of every request (its answer lost, included); 3. two ingest processes start on
the same lake at once; 4. the local disk fails (full, permission denied).
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import s3fs

from include.audit import quarantine
from include.audit.storage import Root

from .fault_proxy import FaultProxy, Plan, every, first_try
from .s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedS3
from .storage_checks import (
    Storage,
    assert_exactly_once,
    export_every_day,
    hidden_leftovers,
    lake_dates,
    lake_event_ids,
    run_cli,
)
from .test_lake_engine import _legacy_copy

REPO = Path(__file__).resolve().parents[1]
NOW_ARG = "2026-11-26T12:00:00Z"
COMMIT = re.compile(r"/_delta_log/\d{20}\.json$")

pytestmark = pytest.mark.slow


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "include.audit", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _generate(capsys, storage: Storage, events: int) -> dict:
    """Plain JSON Lines (so --batch-mb 1 makes several batches); returns the generator's expectations."""
    code, expected, err = run_cli(
        capsys,
        "generate",
        "--raw-root",
        storage.raw,
        "--events",
        str(events),
        "--days",
        "4",
        "--orgs",
        "5",
        "--now",
        NOW_ARG,
        "--no-gzip",
    )
    assert code == 0, err
    return expected


def _ingest_args(storage: Storage) -> list[str]:
    return ["ingest", "--raw-root", storage.raw, "--lake-root", storage.lake, "--now", NOW_ARG, "--batch-mb", "1"]


def _ingest_through(server: SeaweedS3, storage: Storage, plan: Plan) -> tuple[dict, FaultProxy]:
    """Ingest through a fault proxy with ``plan``; it must succeed. Its summary, and the proxy."""
    return _run_through(server, plan, *_ingest_args(storage))


def _run_through(server: SeaweedS3, plan: Plan, *args: str) -> tuple[dict, FaultProxy]:
    """A command through a fault proxy with ``plan``, in a process of its own (delta-rs blocks this
    one's threads, and so an in-process proxy, while it waits); it must succeed. Its output, and the proxy."""
    proxy = FaultProxy(int(server.endpoint.rsplit(":", 1)[1]), plan, delay=1.5).start()
    try:
        run = _cli(*args, env={"AWS_ENDPOINT_URL": proxy.url})
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
    finally:
        proxy.close()
    return json.loads(out), proxy


def _committed_batches(server: SeaweedS3, lake: str) -> int:
    fs = s3fs.S3FileSystem(
        key=ACCESS_KEY,
        secret=SECRET_KEY,
        endpoint_url=server.endpoint,
        skip_instance_cache=True,
        config_kwargs={"retries": {"max_attempts": 1}},
    )
    try:
        log = fs.find(f"{lake.removeprefix('s3://')}/quarantine/_delta_log")
        return sum(1 for p in log if re.fullmatch(r"\d{20}\.json", p.rsplit("/", 1)[-1])) - 1  # 0 creates it
    except Exception:
        return 0


UPSTREAM_PANIC = re.compile(r"thread '[^']*' \(\d+\) panicked at [^\n]*/object_store-[\d.]+/src/[^\n]*")


def without_upstream_panics(err: str) -> list[str]:
    """stderr's lines without the panic message of object_store 0.12's request task (a Rust crate under
    deltalake 1.6.6). When the server dies, delta-rs drops a request whose spawned task then unwraps
    a send to it and panics; that task is detached, the command still fails with our one error line.
    Fixed upstream (the task ignores the failed send); only its printed block is removed here."""
    lines = err.strip().splitlines()
    kept, skipping = [], False
    for line in lines:
        if UPSTREAM_PANIC.match(line):
            skipping = True
        elif skipping and line.startswith("note: run with `RUST_BACKTRACE=1`"):
            skipping = False
        elif line.startswith("error: "):  # ours: it ends any panic block
            skipping = False
            kept.append(line)
        elif not skipping and line.strip():
            kept.append(line)
    return kept


LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ \S+: ")
"""The start of a line the CLI's logging writes to stderr (see ``cli.main``)."""


def _log_records_and_the_rest(lines: list[str]) -> tuple[list[str], list[str]]:
    """``lines`` split into the CLI's log records and every other line."""
    records = [line for line in lines if LOG_RECORD.match(line)]
    return records, [line for line in lines if not LOG_RECORD.match(line)]


@pytest.fixture
def own_s3_server(tmp_path: Path) -> Iterator[SeaweedS3]:
    """A SeaweedFS of this test's own, which the test may kill."""
    server = SeaweedS3(tmp_path / "seaweedfs")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.s3
def test_s3_server_killed_mid_ingest(own_s3_server: SeaweedS3, capsys, monkeypatch) -> None:
    for name, value in own_s3_server.env.items():
        monkeypatch.setenv(name, value)
    base = f"s3://{BUCKET}/killed"
    storage = Storage("s3", f"{base}/raw", f"{base}/lake", f"{base}/exports")
    expected = _generate(capsys, storage, 10_000)

    run = _cli(*_ingest_args(storage), env=own_s3_server.env)
    while _committed_batches(own_s3_server, storage.lake) <= 0 and run.poll() is None:
        time.sleep(0.1)
    own_s3_server.kill()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 1, (out, err)
    records, lines = _log_records_and_the_rest(without_upstream_panics(err))
    assert len(lines) == 1 and lines[0].startswith(f"error: object storage at {own_s3_server.endpoint} failed:")
    assert all(" WARNING include.audit." in r for r in records), records  # a retry may say so before failing
    assert SECRET_KEY not in err and ACCESS_KEY not in err and "Traceback" not in err

    own_s3_server.start()
    started = time.monotonic()
    rerun = _cli(*_ingest_args(storage), env=own_s3_server.env)  # no lease to wait out: it starts at once
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "wait" not in err.lower() and time.monotonic() - started < 100
    assert json.loads(out)["skipped_files"] > 0  # the killed run's committed batches stay done
    export_every_day(capsys, storage)
    assert_exactly_once(storage, expected["valid_events"])
    _, status, err = run_cli(capsys, "status", "--lake-root", storage.lake, "--export-root", storage.exports)
    assert status["quarantined"] == expected["bad"]


@pytest.mark.s3
def test_faulty_network_is_retried(s3_server: SeaweedS3, s3_prefix: str, capsys) -> None:
    storage = Storage("s3", f"{s3_prefix}/raw", f"{s3_prefix}/lake", f"{s3_prefix}/exports")
    expected = _generate(capsys, storage, 1500)
    summary, proxy = _ingest_through(s3_server, storage, every({3: "slowdown", 11: "reset", 19: "slow"}, period=40))
    assert summary["ingested"] == expected["valid_events"]
    assert min(proxy.actions[a] for a in ("slowdown", "reset", "slow")) >= 3, proxy.actions
    export_every_day(capsys, storage)
    assert_exactly_once(storage, expected["valid_events"])


@pytest.mark.s3
@pytest.mark.parametrize("fault", ["reset", "lost", "slowdown"])
def test_the_first_try_of_every_request_failing_loses_and_doubles_nothing(
    s3_server: SeaweedS3, s3_prefix: str, capsys, fault: str
) -> None:
    """The first try of every request of an ingest to each path fails: reset before the server, its
    answer lost after the server did it, or 503 SlowDown. delta-rs never retries a commit's
    conditional PUT, which is then made again (reset) or found in the log (lost). The run succeeds
    and every event is in the lake once."""
    storage = Storage("s3", f"{s3_prefix}/raw", f"{s3_prefix}/lake", f"{s3_prefix}/exports")
    expected = _generate(capsys, storage, 1500)
    summary, proxy = _ingest_through(s3_server, storage, first_try(fault))
    commits = [t for m, t in proxy.faulted if m == "PUT" and COMMIT.search(t)]
    assert len(commits) >= 2 * len(summary["batches"]) >= 4, proxy.faulted  # both commits of every batch
    assert summary["ingested"] == expected["valid_events"]
    assert summary["quarantined"] == expected["bad"]
    export_every_day(capsys, storage)
    assert_exactly_once(storage, expected["valid_events"])


@pytest.mark.s3
def test_a_raw_object_the_store_denies_is_left_for_later_and_the_rest_commits(
    s3_server: SeaweedS3, s3_prefix: str, capsys
) -> None:
    """One object the reader may not read (uploaded from another account without bucket-owner
    access, or moved to Glacier) used to fail every run: a poison pill that stopped every
    organization's events. Now the run commits the rest, names that file and exits 1; a later run,
    once the object is readable, takes it, and every event is in the lake once."""
    storage = Storage("s3", f"{s3_prefix}/raw", f"{s3_prefix}/lake", f"{s3_prefix}/exports")
    expected = _generate(capsys, storage, 1500)
    files = sorted(Root.open(storage.raw).find(Root.open(storage.raw).path))
    denied = Root.open(storage.raw).relative(files[len(files) // 2])

    def plan(n: int, method: str, target: str) -> str:
        return "denied" if method in ("GET", "HEAD") and target.split("?")[0].endswith("/" + denied) else "pass"

    proxy = FaultProxy(int(s3_server.endpoint.rsplit(":", 1)[1]), plan).start()
    try:
        run = _cli(*_ingest_args(storage), env={"AWS_ENDPOINT_URL": proxy.url})
        out, err = run.communicate(timeout=600)
    finally:
        proxy.close()
    assert run.returncode == 1, err
    summary = json.loads(out)
    assert list(summary["failed"]) == [denied] and "403" in summary["failed"][denied], summary["failed"]
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        f"error: {denied}: {summary['failed'][denied]}"
    ]
    assert 0 < summary["ingested"] < expected["valid_events"] and proxy.actions["denied"] >= 1

    code, again, err = run_cli(capsys, *_ingest_args(storage))
    assert code == 0 and again["files"] == 1 and not again["failed"], err
    export_every_day(capsys, storage)
    assert_exactly_once(storage, expected["valid_events"])


def losing_one_commit() -> Plan:
    """``first_try("lost")``, but only the first commit loses its answer: delta-rs's vacuum writes new
    commits (its start and end) on every try, so a network losing every new commit's answer would
    never let it finish. Its deletes and checkpoint writes, which it retries itself, lose theirs."""
    every_first, lost = first_try("lost"), []

    def plan(n: int, method: str, target: str) -> str:
        action = every_first(n, method, target)
        if action == "lost" and method == "PUT" and COMMIT.search(target.split("?", 1)[0]):
            if lost:
                return "pass"
            lost.append(target)
        return action

    return plan


@pytest.mark.s3
def test_maintenance_through_a_network_that_loses_every_first_answer(
    s3_server: SeaweedS3, s3_prefix: str, capsys
) -> None:
    """compact, replay, export-daily, retain and vacuum each meet a network where the first try of every
    request to each path is carried out but its answer lost (so a commit's outcome is unknown): each
    succeeds, and nothing is lost or doubled."""
    storage = Storage("s3", f"{s3_prefix}/raw", f"{s3_prefix}/lake", f"{s3_prefix}/exports")
    expected = _generate(capsys, storage, 1500)
    code, _, err = run_cli(capsys, *_ingest_args(storage))
    assert code == 0, err
    lake = ("--lake-root", storage.lake)
    compacted, proxy = _run_through(s3_server, first_try("lost"), "compact", *lake)
    assert compacted["partitions"] > 0 and proxy.actions["lost"] > 0
    replayed, _ = _run_through(s3_server, first_try("lost"), "replay", *lake, "--now", NOW_ARG)
    assert replayed["records"] > 0 and replayed["ingested"] == 0  # the generator's bad lines still fail
    marked = quarantine.read_all(Root.open(storage.lake))["replayed_at"]
    assert marked.len() - marked.null_count() == replayed["records"]  # each marked once, in one commit
    days = lake_dates(storage.lake)
    exports = ("--export-root", storage.exports)
    for day in days:
        _run_through(s3_server, first_try("lost"), "export-daily", *lake, *exports, "--date", day.isoformat())
    assert_exactly_once(storage, expected["valid_events"])
    before = lake_event_ids(storage.lake)

    today = days[-1] + timedelta(days=1)
    retain = ("retain", *lake, *exports, "--today", today.isoformat(), "--days", str((today - days[1]).days))
    retained, _ = _run_through(s3_server, first_try("lost"), *retain)
    assert {d.split("/")[0] for d in retained["dropped"]} == {days[0].isoformat()}, (retained["kept"], retained["held"])
    vacuumed, proxy = _run_through(s3_server, losing_one_commit(), "vacuum", *lake, "--hours", "0")
    assert any(m == "PUT" and COMMIT.search(t) for m, t in proxy.faulted), proxy.faulted
    assert vacuumed["removed"]["events"] > 0
    after = lake_event_ids(storage.lake)
    assert lake_dates(storage.lake) == days[1:]
    assert after.n_unique() == after.len() and 0 < after.len() < before.len() and set(after) <= set(before)
    assert export_every_day(capsys, storage) == 0  # compaction and retention left every export current


@pytest.mark.s3
def test_migrate_through_a_network_that_loses_every_first_answer(
    s3_server: SeaweedS3, s3_prefix: str, tmp_path: Path, capsys
) -> None:
    """migrate's commits (the conversion, the table properties, the quarantine's new columns) each
    lose their first answer: each is found made when tried again, and the old lake converts whole."""
    lake = f"{s3_prefix}/legacy/lake"
    Root.open(lake).fs.put(_legacy_copy(tmp_path)["lake"], lake.removeprefix("s3://"), recursive=True)
    done, proxy = _run_through(s3_server, first_try("lost"), "migrate", "--lake-root", lake)
    assert sum(m == "PUT" and bool(COMMIT.search(t)) for m, t in proxy.faulted) >= 3, proxy.faulted
    assert done["ledger_entries"] == 1
    code, again, err = run_cli(capsys, "migrate", "--lake-root", lake)
    assert code == 0 and again == {"events": "already a Delta table", "quarantine": "already a Delta table"}, err
    events = lake_event_ids(lake)
    assert events.len() == events.n_unique() == 200
    records = quarantine.read_all(Root.open(lake))
    assert records.height == 40 and {"replayed_at", "replay_outcome"} <= set(records.columns)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    base = str(tmp_path) if request.param == "local" else request.getfixturevalue("s3_prefix")
    return Storage(request.param, f"{base}/raw", f"{base}/lake", f"{base}/exports")


def test_two_ingests_at_once(storage: Storage, capsys) -> None:
    expected = _generate(capsys, storage, 4000)
    runs = [_cli(*_ingest_args(storage), env={}) for _ in range(2)]
    results = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [err for _, err in results]
    summaries = [json.loads(out) for out, _ in results]
    # optimistic commits: each event is committed by exactly one of the two, whichever got there first
    assert sum(s["ingested"] for s in summaries) == expected["valid_events"]
    assert sum(s["duplicates"] for s in summaries) >= expected["redeliveries"]
    export_every_day(capsys, storage)
    assert_exactly_once(storage, expected["valid_events"])
    _code, status, _err = run_cli(capsys, "status", "--lake-root", storage.lake, "--export-root", storage.exports)
    assert status["quarantined"] == expected["bad"]  # and every bad line quarantined once


@pytest.mark.parametrize("call,code", [("fsync", errno.ENOSPC), ("replace", errno.EACCES)])
def test_local_disk_failure(tmp_path: Path, capsys, monkeypatch, call: str, code: int) -> None:
    storage = Storage("local", str(tmp_path / "raw"), str(tmp_path / "lake"), str(tmp_path / "exports"))
    expected = _generate(capsys, storage, 3000)
    real, calls = getattr(os, call), []

    def failing(*args):
        calls.append(args)
        if len(calls) > 2:  # the run's first state files are written, then the disk fails
            raise OSError(code, os.strerror(code))
        return real(*args)

    monkeypatch.setattr(os, call, failing)
    exit_code, _, err = run_cli(capsys, *_ingest_args(storage))
    monkeypatch.setattr(os, call, real)
    assert exit_code == 1
    assert err.count("\n") == 1 and err.startswith("error: StorageError: cannot write ") and os.strerror(code) in err
    assert hidden_leftovers(storage.lake) == []

    exit_code, _, err = run_cli(capsys, *_ingest_args(storage))
    assert exit_code == 0, err
    export_every_day(capsys, storage)
    assert_exactly_once(storage, expected["valid_events"])
