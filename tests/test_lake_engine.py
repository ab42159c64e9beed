"""The lake engine on Delta Lake: paused and concurrent writers, compaction, vacuum, migration, bounded work.

Paused and concurrent writers run as separate processes (delta-rs runs a tokio runtime: spawned
subprocesses, never forks), on local disk and on SeaweedFS.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from include.audit import lake as lk
from include.audit import ledger as ledgers
from include.audit import maintenance, quarantine
from include.audit.exports import export_daily
from include.audit.generate import generate
from include.audit.ingest import ingest
from include.audit.maintenance import compact, vacuum
from include.audit.migrate import migrate
from include.audit.storage import Root

from .fault_proxy import FaultProxy
from .s3_server import SeaweedS3
from .storage_checks import Storage, lake_event_ids, run_cli

REPO = Path(__file__).resolve().parents[1]
NOW_ARG = "2026-11-26T12:00:00Z"
LEGACY = Path(__file__).with_name("data") / "legacy-lake"

pytestmark = pytest.mark.slow


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    base = str(tmp_path) if request.param == "local" else request.getfixturevalue("s3_prefix")
    return Storage(request.param, f"{base}/raw", f"{base}/lake", f"{base}/exports")


def _ingest_process(storage: Storage, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "include.audit",
            "-v",
            "ingest",
            "--raw-root",
            storage.raw,
            "--lake-root",
            storage.lake,
            "--now",
            NOW_ARG,
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _events_version(storage: Storage) -> int:
    table = lk.events_table(Root.open(storage.lake)).open()
    return -1 if table is None else table.version()


def _assert_exactly_once(storage: Storage, expected) -> None:
    ids = lake_event_ids(storage.lake)
    assert ids.len() == ids.n_unique() == expected.valid_events
    records = quarantine.read_all(Root.open(storage.lake))
    assert records.select("source_file", "line_number").is_duplicated().sum() == 0
    assert dict(records.group_by("reason").len().iter_rows()) == dict(expected.bad)


def test_a_paused_writer_doubles_nothing_when_it_resumes(storage: Storage) -> None:
    """SIGSTOP a writer mid-run (as a GC pause or a stalled network would), let another ingest finish, resume it."""
    expected = generate(
        storage.raw,
        events=6000,
        days=3,
        organizations=4,
        bad_share=0.005,
        compress=False,
        now=lk.datetime.fromisoformat(NOW_ARG),
    )
    paused = _ingest_process(storage, "--batch-mb", "1")
    while _events_version(storage) < 1 and paused.poll() is None:  # its first batch is committed
        time.sleep(0.05)
    time.sleep(0.3)  # now well inside a later batch: parsed, deduplicated, about to commit
    paused.send_signal(signal.SIGSTOP)
    try:
        other = _ingest_process(storage, "--batch-mb", "1")
        _, err = other.communicate(timeout=600)
        assert other.returncode == 0, err
    finally:
        paused.send_signal(signal.SIGCONT)
    out, err = paused.communicate(timeout=600)
    assert paused.returncode == 0, err
    assert "Traceback" not in err
    _assert_exactly_once(storage, expected)
    summary = json.loads(out)
    # the resumed writer either lost its commit and re-deduplicated, or stopped at the other's lines
    assert summary["stopped"] or "deduplicating again" in err or summary["ingested"] == 0


def test_compaction_keeps_rows_and_loses_nothing_to_a_concurrent_ingest(storage: Storage) -> None:
    now = lk.datetime.fromisoformat(NOW_ARG)
    generate(storage.raw, events=3000, days=2, organizations=3, compress=False, now=now)
    ingest(storage.raw, storage.lake, now=now, batch_bytes=150_000)
    lake = Root.open(storage.lake)
    before = pl.from_arrow(lk.events_table(lake).open().to_pyarrow_table()).sort("event_id")

    late_raw = f"{storage.raw}-late"
    more = generate(late_raw, events=800, days=2, organizations=3, compress=False, now=now, seed=99)
    runner = threading.Thread(target=ingest, args=(late_raw, storage.lake), kwargs={"now": now, "batch_bytes": 40_000})
    runner.start()
    result = compact(storage.lake)
    runner.join()
    assert result.partitions > 0

    after = pl.from_arrow(lk.events_table(lake).open().to_pyarrow_table()).sort("event_id")
    assert after.height == before.height + more.valid_events == after["event_id"].n_unique()
    kept = after.join(before.select("event_id"), on="event_id", how="semi").select(before.columns).sort("event_id")
    assert kept.equals(before)  # the same rows with the same content
    compact(storage.lake)
    files = lk.live_files(lk.events_table(lake).open()).group_by("event_date", "organization_id").len()
    assert files["len"].max() == 1  # one live file per partition


def test_ingest_writes_snappy_files_and_compaction_rewrites_them_in_zstd(tmp_path: Path) -> None:
    """An ingest batch's files live a day: cheap to encode; compaction's are kept: small."""
    import pyarrow.parquet as pq

    now = lk.datetime.fromisoformat(NOW_ARG)
    raw, lake_url = str(tmp_path / "raw"), str(tmp_path / "lake")
    generate(raw, events=600, days=1, organizations=2, compress=False, now=now)
    ingest(raw, lake_url, now=now, batch_bytes=60_000)  # several batches: several files per partition
    lake = Root.open(lake_url)

    def codecs() -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for path in lk.live_files(lk.events_table(lake).open())["path"]:
            meta = pq.ParquetFile(lake.join(lk.EVENTS, path)).metadata
            found = {
                meta.row_group(g).column(c).compression
                for g in range(meta.num_row_groups)
                for c in range(meta.num_columns)
            }
            out.setdefault(path.rsplit(".", 2)[-2], set()).update(found)
        return out

    assert codecs() == {"snappy": {"SNAPPY"}}
    assert compact(lake_url).partitions > 0
    assert codecs() == {"zstd": {"ZSTD"}}


def test_an_ingest_committing_mid_compaction_neither_blocks_it_nor_doubles_rows(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real ingest commits into the same partitions after the compaction read them and before it
    commits. Its files stay beside the compacted one; the rewrite is committed without being redone."""
    now = lk.datetime.fromisoformat(NOW_ARG)
    generate(storage.raw, events=2000, days=2, organizations=2, compress=False, now=now)
    ingest(storage.raw, storage.lake, now=now, batch_bytes=100_000)
    late_raw = f"{storage.raw}-late"
    more = generate(late_raw, events=400, days=2, organizations=2, compress=False, now=now, seed=99)
    lake = Root.open(storage.lake)
    before = lake_event_ids(storage.lake).len()
    rewrites: list[tuple[date, str]] = []
    real = maintenance._rewrite_partition

    def rewrite_then_let_an_ingest_commit(lake_root, table, part):
        done = real(lake_root, table, part)
        if not rewrites:
            ingest(late_raw, storage.lake, now=now)  # commits while this compaction holds its rewrites
        rewrites.append(part[:2])
        return done

    monkeypatch.setattr(maintenance, "_rewrite_partition", rewrite_then_let_an_ingest_commit)
    result = compact(storage.lake)
    assert result.partitions == len(set(rewrites)) == len(rewrites) > 0  # each partition rewritten once
    history = [lk.read_commit_metadata(c) | {"version": c["version"]} for c in lk.events_table(lake).open().history()]
    assert result.versions == [c["version"] for c in history if c.get("operation") == "compact"]
    ids = lake_event_ids(storage.lake)
    assert ids.len() == ids.n_unique() == before + more.valid_events
    files = lk.live_files(lk.events_table(lake).open()).group_by("event_date", "organization_id").len()
    assert files["len"].max() == 2  # the compacted file, and the late ingest's file beside it


def test_two_compactions_at_once_double_nothing(storage: Storage) -> None:
    """Both read the same files; delta-rs would let both commits remove them (each adding its own copy:
    30,531 rows for 20,000 events). A compaction commits only on the version it read, else reads again."""
    now = lk.datetime.fromisoformat(NOW_ARG)
    expected = generate(storage.raw, events=6000, days=2, organizations=3, compress=False, now=now)
    ingest(storage.raw, storage.lake, now=now, batch_bytes=100_000)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "include.audit", "compact", "--lake-root", storage.lake],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    done = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), done
    assert sum(json.loads(out)["partitions"] for out, _ in done) > 0
    _assert_exactly_once(storage, expected)
    files = lk.live_files(lk.events_table(Root.open(storage.lake)).open())
    assert files.group_by("event_date", "organization_id").len()["len"].max() == 1


def test_a_partition_that_cannot_be_read_is_left_and_every_other_one_compacted(tmp_path: Path, capsys) -> None:
    """A live data file gone from storage breaks its partition's read: compaction leaves that
    partition as it is, compacts all the others, names it in ``failed`` and exits 1."""
    now = lk.datetime.fromisoformat(NOW_ARG)
    raw, lake_url = str(tmp_path / "raw"), str(tmp_path / "lake")
    generate(raw, events=900, days=2, organizations=3, compress=False, now=now)
    ingest(raw, lake_url, now=now, batch_bytes=60_000)  # several files per partition
    lake = Root.open(lake_url)
    before = lk.live_files(lk.events_table(lake).open())
    counts = before.group_by("event_date", "organization_id").len()
    assert counts["len"].min() > 1 and counts.height > 2
    broken = before.sort("path").row(0, named=True)
    (Path(lake_url) / lk.EVENTS / broken["path"]).unlink()
    code, _, err = run_cli(capsys, "compact", "--lake-root", lake_url)
    key = f"{broken['event_date'].isoformat()}/{broken['organization_id']}"
    assert code == 1 and err.strip().splitlines()[-1].startswith(f"error: {key}: "), err
    after = lk.live_files(lk.events_table(lake).open()).group_by("event_date", "organization_id").len()
    left = {(r["event_date"], r["organization_id"]): r["len"] for r in after.iter_rows(named=True) if r["len"] > 1}
    assert left == {
        (broken["event_date"], broken["organization_id"]): counts.filter(
            (pl.col("event_date") == broken["event_date"]) & (pl.col("organization_id") == broken["organization_id"])
        )["len"].item()
    }


def test_compaction_alone_never_makes_an_export_stale(tmp_path: Path, now) -> None:
    roots = {n: str(tmp_path / n) for n in ("raw", "lake", "exports")}
    generate(roots["raw"], events=2000, days=2, organizations=2, compress=False, now=now)
    ingest(roots["raw"], roots["lake"], now=now, batch_bytes=100_000)
    lake = Root.open(roots["lake"])
    day = lk.event_dates(lake)[0]
    (written,) = export_daily(roots["lake"], roots["exports"], day, ["acme-001"])
    csv = Path(written.path).read_bytes()
    assert compact(roots["lake"], day).partitions > 0
    (again,) = export_daily(roots["lake"], roots["exports"], day, ["acme-001"])
    assert again.skipped and Path(again.path).read_bytes() == csv
    (forced,) = export_daily(roots["lake"], roots["exports"], day, ["acme-001"], force=True)
    assert Path(forced.path).read_bytes() == csv  # the compacted rows give the same bytes
    history = DeltaTable(f"{roots['lake']}/events").history(1)[0]
    assert lk.read_commit_metadata(history)["operation"] == "compact"
    log = sorted((Path(roots["lake"]) / "events" / "_delta_log").glob("*.json"))[-1].read_text().splitlines()
    actions = [json.loads(line) for line in log]
    assert all(a[k]["dataChange"] is False for a in actions for k in ("add", "remove") if k in a)


def test_vacuum_removes_unreferenced_files_and_keeps_the_table_readable(tmp_path: Path, now) -> None:
    roots = {n: str(tmp_path / n) for n in ("raw", "lake")}
    generate(roots["raw"], events=1500, days=2, organizations=2, compress=False, now=now)
    ingest(roots["raw"], roots["lake"], now=now, batch_bytes=100_000)
    events_dir = Path(roots["lake"]) / "events"
    stray = events_dir / "event_date=2026-11-25" / "organization_id=acme-001" / "part-killed-writer.parquet"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"PAR1 left by a killed writer")
    compact(roots["lake"])

    def data_files() -> list[Path]:
        return list(events_dir.glob("event_date=*/organization_id=*/*.parquet"))

    on_disk = len(data_files())
    result = vacuum(roots["lake"], hours=0)
    assert result["removed"]["events"] > 0 and not stray.exists()
    live = DeltaTable(str(events_dir)).file_uris()
    assert len(data_files()) == len(live) < on_disk
    assert pl.read_delta(str(events_dir)).height == 1500
    assert list((events_dir / "_delta_log").glob("*.checkpoint.parquet"))


def test_the_ledger_forgets_raw_files_that_left_the_raw_root(tmp_path: Path, now) -> None:
    roots = {n: str(tmp_path / n) for n in ("raw", "lake")}
    generate(roots["raw"], events=500, days=2, organizations=2, compress=False, now=now)
    ingest(roots["raw"], roots["lake"], now=now)
    lake = Root.open(roots["lake"])
    known = set(ledgers.load(lake, quarantine.table(lake).open()).files)
    gone = sorted(Path(roots["raw"]).rglob("*.jsonl"))[:5]
    for path in gone:
        path.unlink()
    assert ingest(roots["raw"], roots["lake"], now=now).files == 0
    generate(roots["raw"], events=10, days=1, organizations=1, compress=False, now=now, seed=3)  # a new run
    ingest(roots["raw"], roots["lake"], now=now)
    snapshot = pl.read_parquet(ledgers.snapshot_path(lake))
    assert not {str(p.relative_to(roots["raw"])) for p in gone} & set(snapshot["path"])
    assert len(known) - len(gone) <= snapshot.height


def _legacy_copy(tmp_path: Path) -> dict[str, str]:
    """The legacy fixture (written by the pre-Delta version) with its raw files' mtimes as its ledger saw them."""
    shutil.copytree(LEGACY, tmp_path / "legacy")
    raw, lake = tmp_path / "legacy" / "raw", tmp_path / "legacy" / "lake"
    for entry in (lake / "_state" / "ingested").glob("*.json"):
        for path, signature in json.loads(entry.read_text())["files"].items():
            mtime = float(signature.split(":", 1)[1])
            os.utime(raw / path, (mtime, mtime))
    return {"raw": str(raw), "lake": str(lake)}


def test_a_lake_written_by_the_previous_version_migrates_in_place(tmp_path: Path, now) -> None:
    roots = _legacy_copy(tmp_path)
    before = pl.read_parquet(f"{roots['lake']}/events/**/*.parquet", hive_partitioning=True)
    done = migrate(roots["lake"])
    assert done["events"] == "converted" and done["quarantine"] == "converted" and done["ledger_entries"] == 1
    assert "delta.dataSkippingStatsColumns" in done["properties_set"]["events"]
    config = DeltaTable(f"{roots['lake']}/events").metadata().configuration
    assert config["delta.dataSkippingStatsColumns"] == "event_time,event_id"
    assert DeltaTable(f"{roots['lake']}/quarantine").metadata().configuration["delta.checkpointInterval"] == "20"
    again = migrate(roots["lake"])
    assert again["events"] == again["quarantine"] == "already a Delta table" and "ledger_entries" not in again
    assert "properties_set" not in again
    events = pl.read_delta(f"{roots['lake']}/events")
    assert events.height == before.height == 200
    assert set(events["event_id"]) == set(before["event_id"])
    assert quarantine.read_all(Root.open(roots["lake"])).height == 40
    rerun = ingest(roots["raw"], roots["lake"], now=now)  # the old ledger carried over: nothing to redo
    assert rerun.files == 0 and rerun.ingested == 0
    lake = Root.open(roots["lake"])
    assert lk.event_dates(lake) == [date(2026, 11, 25), date(2026, 11, 26)]
    assert not (Path(roots["lake"]) / "_state" / "ingest.lock").exists()
    # and the migrated tables take new batches
    fresh = generate(roots["raw"] + "-new", events=120, days=1, organizations=2, now=now, seed=5, bad_share=0.02)
    added = ingest(roots["raw"] + "-new", roots["lake"], now=now)
    assert added.ingested == fresh.valid_events and added.quarantined == dict(fresh.bad)
    assert pl.read_delta(f"{roots['lake']}/events").height == 200 + fresh.valid_events


def _count_requests(server: SeaweedS3, storage: Storage) -> int:
    """Run an ingest in a process of its own through a passing proxy: the requests it made."""
    proxy = FaultProxy(int(server.endpoint.rsplit(":", 1)[1]), lambda *_: "pass").start()
    try:
        run = _ingest_process(storage, env={"AWS_ENDPOINT_URL": proxy.url})
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
    finally:
        proxy.close()
    return proxy.actions["pass"]


@pytest.mark.s3
def test_the_work_of_a_small_ingest_does_not_grow_with_the_lake(s3_server: SeaweedS3, s3_prefix: str) -> None:
    """The same small batch on a lake of 10 days and of 40 days costs the same number of S3 requests."""
    now = lk.datetime.fromisoformat(NOW_ARG)
    requests = {}
    for days in (10, 40):
        storage = Storage("s3", f"{s3_prefix}/{days}/raw", f"{s3_prefix}/{days}/lake", "")
        generate(
            f"{s3_prefix}/{days}/history",
            events=days * 300,
            days=days,
            organizations=3,
            now=now,
            compress=False,
            producers=1,
        )
        ingest(f"{s3_prefix}/{days}/history", storage.lake, now=now, batch_bytes=200 << 20)
        compact(storage.lake)
        generate(storage.raw, events=300, days=1, organizations=3, now=now, seed=11, producers=1, compress=False)
        requests[days] = _count_requests(s3_server, storage)
    assert requests[40] <= requests[10] * 1.1 + 5, requests


def test_history_shows_what_each_batch_loaded(tmp_path: Path, now) -> None:
    roots = {n: str(tmp_path / n) for n in ("raw", "lake")}
    generate(roots["raw"], events=400, days=1, organizations=2, compress=False, now=now)
    summary = ingest(roots["raw"], roots["lake"], now=now)
    (commit,) = [c for c in DeltaTable(f"{roots['lake']}/quarantine").history() if c["operation"] == "WRITE"]
    meta = lk.read_commit_metadata(commit)
    assert meta["batch_id"] == summary.batches[0] and meta["ingested"] == 400
    assert all(re.fullmatch(r"\d+:\S+", sig) and done for sig, _, done in meta["files"].values())


def test_status_reports_freshness_lag_and_the_oldest_unprocessed_file(tmp_path: Path, now) -> None:
    from include.audit.status import lake_status

    from .helpers import event, write_lines

    roots = {n: str(tmp_path / n) for n in ("raw", "lake", "exports")}
    first = write_lines(Path(roots["raw"]) / "a.jsonl", [event(event_id="a")])
    os.utime(first, (now.timestamp() - 120, now.timestamp() - 120))
    summary = ingest(roots["raw"], roots["lake"], now=now)
    assert summary.lag_seconds is not None and summary.lag_seconds >= 120  # arrival -> commit
    late = write_lines(Path(roots["raw"]) / "b.jsonl", [event(event_id="b")])
    os.utime(late, (1_700_000_000, 1_700_000_000))
    fresh = lake_status(roots["lake"], roots["exports"], roots["raw"])["freshness"]
    assert fresh["pending_files"] == 1 and fresh["oldest_unprocessed"]["path"] == "b.jsonl"
    assert fresh["oldest_unprocessed"]["modified"] == "2023-11-14T22:13:20Z"
    assert fresh["last_commit"].endswith("Z") and fresh["last_lag_seconds"] >= 120


@pytest.mark.parametrize("files_at_once", [True, False])
def test_reading_a_table_shows_a_column_an_older_file_lacks_as_null(tmp_path: Path, files_at_once: bool) -> None:
    """After the schema gained a column, rows of files written before it read as null, on the
    one-query path for many local files and on the file-by-file path (one file, or a remote store)."""
    from deltalake import write_deltalake

    uri = str(tmp_path / "t")
    old = pl.DataFrame({"k": ["a", "b"], "day": ["2026-11-01", "2026-11-01"]})
    write_deltalake(uri, old.to_arrow(), partition_by=["day"])
    if files_at_once:
        write_deltalake(uri, old.with_columns(k=pl.lit("c")).to_arrow(), partition_by=["day"], mode="append")
    new = pl.DataFrame({"k": ["d"], "day": ["2026-11-02"], "extra": ["x"]})
    write_deltalake(uri, new.to_arrow(), partition_by=["day"], mode="append", schema_mode="merge")
    schema = {"k": pl.String(), "extra": pl.String(), "day": pl.String()}
    lake = Root.open(str(tmp_path))
    table = DeltaTable(uri)
    every = lk.read_table(lake, table, schema).sort("k")
    assert every["extra"].to_list() == [None] * (every.height - 1) + ["x"]
    assert every["day"].to_list() == ["2026-11-01"] * (every.height - 1) + ["2026-11-02"]
    older = lk.read_table(lake, table, schema, [("day", "=", "2026-11-01")], ["k", "extra"])
    assert older.height == every.height - 1 and older["extra"].null_count() == older.height


def test_a_lost_commit_is_found_under_its_own_version_while_others_commit(tmp_path: Path) -> None:
    """delta-rs's history numbers the log's newest commits from the handle's version: two writers
    committing while the log is looked at must not shift the version found for ours."""
    from deltalake import CommitProperties, write_deltalake

    uri = str(tmp_path / "table")

    def commit(batch: str) -> None:
        write_deltalake(
            uri,
            pl.DataFrame({"a": [1]}).to_arrow(),
            mode="append",
            commit_properties=CommitProperties(custom_metadata={"audit.batch_id": batch}),
        )

    commit("first")
    table = DeltaTable(uri)
    commit("ours")  # version 1, whose answer the writer never saw
    history, others = table.history, iter(["other-1", "other-2"])

    def racing(limit: int | None = None) -> list:
        if (batch := next(others, None)) is not None:
            commit(batch)  # lands between the look at the latest version and the history
        return history(limit)

    table.history = racing  # type: ignore[method-assign]
    assert lk._landed(table, 0, {"audit.batch_id": "ours"}) == 1
    assert lk._landed(table, 0, {"audit.batch_id": "never"}) is None
