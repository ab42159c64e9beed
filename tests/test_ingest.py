"""Ingest end to end on local disk: counts, quarantine, dedupe, reruns, crashes, and the GE gate."""

import json
import shutil
import threading
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from include.audit import dedupe as dedupe_module
from include.audit import ingest as ingest_module
from include.audit import lake as lk
from include.audit import ledger as ledger_module
from include.audit import quarantine
from include.audit.events import Window
from include.audit.generate import generate
from include.audit.ingest import IngestSummary, ingest
from include.audit.maintenance import vacuum
from include.audit.storage import Root
from include.audit.validation import ValidationFailed

from .helpers import event, write_lines


def lake_events(lake: str) -> pl.DataFrame:
    return pl.read_delta(f"{lake}/events")


def test_generated_data_lands_exactly_once_with_every_bad_line_quarantined(roots, now):
    expected = generate(roots["raw"], events=3000, days=3, organizations=5, bad_share=0.005, now=now)
    summary = ingest(roots["raw"], roots["lake"], now=now).as_dict()
    assert summary["ingested"] == expected.valid_events == 3000
    assert summary["duplicates"] == expected.redeliveries
    assert summary["quarantined"] == dict(expected.bad)
    assert summary["lines"] == expected.lines
    events = lake_events(roots["lake"])
    assert events.height == 3000 and events["event_id"].n_unique() == 3000
    counts = events.group_by("event_date", "organization_id").len()
    assert {(str(d), o): n for d, o, n in counts.iter_rows()} == {
        (d, o): n for (d, o), n in expected.per_partition.items()
    }
    records = quarantine.read_all(Root.open(roots["lake"]))
    assert records.height == sum(expected.bad.values())
    assert records.filter(pl.col("reason") != "unreadable_file")["raw"].null_count() == 0
    assert set(records.columns) >= {"reason", "detail", "source_file", "line_number", "raw", "quarantined_at"}


def test_each_batch_is_one_commit_whose_metadata_says_what_it_loaded(roots, now):
    generate(roots["raw"], events=1500, days=2, organizations=3, now=now, producers=2)
    summary = ingest(roots["raw"], roots["lake"], now=now, batch_bytes=100_000)
    assert len(summary.batches) > 1
    history = DeltaTable(f"{roots['lake']}/events").history()
    batches = [lk.read_commit_metadata(c) for c in history if c["operation"] == "WRITE"]
    loaded = [m for m in batches if "batch_id" in m]
    assert sorted(m["batch_id"] for m in loaded) == sorted(summary.batches)
    assert all(m["files"] and m["lines"] > 0 for m in loaded)
    committed = {p for m in loaded for p in m["files"]}
    assert committed == {str(p.relative_to(roots["raw"])) for p in Path(roots["raw"]).rglob("*.jsonl.gz")}
    assert summary.events_version == DeltaTable(f"{roots['lake']}/events").version()  # the last batch's commit


def test_rerun_with_no_new_files_writes_nothing(roots, now):
    generate(roots["raw"], events=500, days=2, organizations=3, now=now)
    ingest(roots["raw"], roots["lake"], now=now)
    before = sorted(p for p in Path(roots["lake"]).rglob("*") if p.is_file())
    summary = ingest(roots["raw"], roots["lake"], now=now)
    assert summary.files == 0 and summary.ingested == 0 and summary.skipped_files > 0
    assert sorted(p for p in Path(roots["lake"]).rglob("*") if p.is_file()) == before


def test_identical_redelivery_is_counted_once_and_conflicts_are_quarantined(roots, now):
    raw = Path(roots["raw"])
    write_lines(
        raw / "a.jsonl", [event(event_id="e1"), event(event_id="e1"), event(event_id="e1", action="DeleteUser")]
    )
    first = ingest(roots["raw"], roots["lake"], now=now)
    assert (first.ingested, first.duplicates, first.quarantined) == (1, 1, {"conflicting_duplicate": 1})
    # later files: the same instant in another offset (and an extra field that is null, i.e. absent) is the
    # same event; other content conflicts with the lake
    write_lines(
        raw / "b.jsonl",
        [
            event(event_id="e1", event_time="2026-11-25T11:00:00+01:00", zeta=None),
            event(event_id="e1", event_time="2026-11-24T10:00:00Z"),
        ],
    )
    second = ingest(roots["raw"], roots["lake"], now=now)
    assert (second.ingested, second.duplicates, second.quarantined) == (0, 1, {"conflicting_duplicate": 1})
    records = quarantine.read_all(Root.open(roots["lake"])).sort("source_file", "line_number")
    assert "in the lake" in records["detail"][-1] and "earlier in the batch" in records["detail"][0]
    # each conflict keeps its line's own text (read back from the batch's packed raw text)
    texts = {f: (raw / f).read_text().splitlines() for f in ("a.jsonl", "b.jsonl")}
    assert records["raw"].to_list() == [texts["a.jsonl"][2], texts["b.jsonl"][1]]
    kept = lake_events(roots["lake"])
    assert kept.height == 1 and kept["action"][0] == "CreateJobRun"  # the first version wins


def test_the_event_id_index_knows_redeliveries_and_never_mistakes_a_hash_collision(roots, now, monkeypatch):
    """The index matches event_ids by a 64-bit hash. A re-delivery is known from the index alone; a
    new event whose hash an indexed one shares (forced here) is checked against the table's
    event_id column and goes in; other content under a known event_id is a conflict."""
    write_lines(Path(roots["raw"]) / "a.jsonl", [event(event_id="e1")])
    ingest(roots["raw"], roots["lake"], now=now)
    lake = Root.open(roots["lake"])
    table = lk.open_events(lake)
    index = dedupe_module.EventIndex(lake)
    index.refresh(table)
    stored = lake_events(roots["lake"])
    (day,) = index.days
    entries = dedupe_module.fingerprints(stored)
    collision = pl.DataFrame({"h": pl.Series(["e2"]).hash(seed=0), "c": pl.Series([123], dtype=pl.UInt64)})
    piece = index._write(day, index.version, 1, True, [pl.concat([entries, collision])])
    index.days[day] = dedupe_module.Day(1, [piece])

    def outcome(valid: pl.DataFrame) -> tuple[int, int, int]:
        accepted, conflicts, duplicates = dedupe_module.dedupe(valid, index.matching(table, valid))
        return accepted.height, conflicts.height, duplicates

    assert outcome(stored.with_columns(event_id=pl.lit("e2"))) == (1, 0, 0)  # not e1's: a new event
    assert outcome(stored.with_columns(action=pl.lit("DeleteUser"))) == (0, 1, 0)
    monkeypatch.setattr(lk, "read_dates", None)  # a re-delivery reads nothing from the table
    assert outcome(stored) == (0, 0, 1)


def index_files(lake: str) -> list[str]:
    return sorted(p.name for p in (Path(lake) / "_state" / "event-ids").iterdir())


def test_an_index_file_another_process_consolidated_away_is_found_again(roots, now, caplog):
    """Compaction consolidates the event-id index and removes the per-day pieces a running ingest
    may have just found: its lookup finds the index again instead of failing the batch, and a
    later commit by another process adds up with the new file, so nothing is rebuilt."""
    write_lines(Path(roots["raw"]) / "a.jsonl", [event(event_id="e1"), event(event_id="e2")])
    ingest(roots["raw"], roots["lake"], now=now)
    lake = Root.open(roots["lake"])
    table = lk.open_events(lake)
    stored = lake_events(roots["lake"])
    running = dedupe_module.EventIndex(lake)
    running.refresh(table)
    (day,) = running.days
    (piece,) = running.days[day].pieces
    assert not piece.base and piece.rows == 2  # the delta of the run's one commit
    assert dedupe_module.EventIndex(lake).consolidate(table) == 1  # another process
    assert not Path(piece.path).exists() and index_files(roots["lake"]) == ["all.parquet"]
    known = running.matching(table, stored)
    assert sorted(known["event_id"]) == ["e1", "e2"]
    assert [p.path for p in running.days[day].pieces] == [running.path()]
    caplog.set_level("INFO")
    other = ingest_module.Run(
        lake, Window(now=now), now, False, dedupe_module.EventIndex(lake), ledger_module.Ledger(), IngestSummary()
    )
    ingest_module.commit_events(other, stored.head(1).with_columns(event_id=pl.lit("e3")), "other", {})
    dedupe_module.EventIndex(lake).consolidate(lk.open_events(lake))  # and again: e1..e3 in all.parquet
    ingest_module.commit_events(other, stored.head(1).with_columns(event_id=pl.lit("e4")), "other2", {})
    running.refresh(lk.open_events(lake))
    assert "rebuilt the event-id index" not in caplog.text
    assert running.days[day].rows == 4 and [p.base for p in running.days[day].pieces] == [True, False]


def test_each_commit_appends_its_own_entries_and_a_day_of_many_pieces_is_folded(roots, now, monkeypatch):
    """A commit writes a delta piece of its own entries only, never the day's: the cost of a run
    follows its events, not the size of the days it touches. Once a day has more than DAY_PIECES
    pieces the run folds them into one base piece, copied a row group at a time, in row groups of
    one size, and removes the pieces it replaces."""
    monkeypatch.setattr(dedupe_module, "INDEX_ROW_GROUP", 1000)
    monkeypatch.setattr(dedupe_module, "DAY_PIECES", 3)
    written: list[int] = []
    write_table = pq.ParquetWriter.write_table
    monkeypatch.setattr(
        pq.ParquetWriter,
        "write_table",
        lambda self, table, **kw: (
            (table.column_names == ["event_date", "h", "c"] and written.append(table.num_rows))
            or write_table(self, table, **kw)
        ),
    )  # the index's row groups
    raw = Path(roots["raw"])
    for run in range(5):
        write_lines(raw / f"run{run}.jsonl", [event(event_id=f"r{run}-e{i}") for i in range(700)])
        before = sum(written)
        ingest(roots["raw"], roots["lake"], now=now, validate=False)
        pieces = index_files(roots["lake"])
        if run == 3:  # four deltas: folded, once the fourth is written, into one base of 2,800 entries
            assert sum(written) - before == 700 + 2800 and max(written) == 1000
            (base,) = pieces
            assert ".upto4.n2800." in base
            with (Path(roots["lake"]) / "_state" / "event-ids" / base).open("rb") as f:
                metadata = pq.ParquetFile(f).metadata
            assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [1000, 1000, 800]
        else:
            assert sum(written) - before == 700  # the run's own entries, whatever the day holds
        assert len(pieces) == {0: 1, 1: 2, 2: 3, 3: 1, 4: 2}[run]
    lake = Root.open(roots["lake"])
    index = dedupe_module.EventIndex(lake)
    index.refresh(lk.open_events(lake))
    assert len(index.days) == 1  # one day
    stored = pl.concat(list(index._groups(index.days)))
    expected = dedupe_module.fingerprints(lake_events(roots["lake"]))
    assert stored.drop("event_date").sort("h", "c").equals(expected.sort("h", "c"))
    shutil.copytree(raw, raw / "again")
    summary = ingest(roots["raw"], roots["lake"], now=now, validate=False)
    assert (summary.ingested, summary.duplicates) == (0, 3500)


def test_concurrent_runs_append_their_own_pieces_and_none_rebuilds(roots, now, caplog):
    """Two runs committing to the same day in turn each append a delta; each finds the other's
    pieces adding up to the day's rows, so neither rebuilds the day from the table, and every
    re-delivery is known afterwards."""
    source = Path(roots["raw"]).parent / "source"
    write_lines(source / "raw" / "a.jsonl", [event(event_id=f"e{i}") for i in range(1, 7)])
    ingest(str(source / "raw"), str(source / "lake"), now=now, validate=False)
    one = {i: pl.read_delta(str(source / "lake" / "events")).filter(pl.col("event_id") == f"e{i}") for i in range(1, 7)}
    lake = Root.open(roots["lake"])

    def run() -> ingest_module.Run:
        index = dedupe_module.EventIndex(lake)
        return ingest_module.Run(lake, Window(now=now), now, False, index, ledger_module.Ledger(), IngestSummary())

    r, q = run(), run()
    caplog.set_level("INFO")
    ingest_module.commit_events(r, pl.concat([one[1], one[2]]), "r1", {})
    ingest_module.commit_events(q, one[3], "q1", {})
    ingest_module.commit_events(r, one[4], "r2", {})
    ingest_module.commit_events(q, one[5], "q2", {})
    ingest_module.commit_events(run(), one[6], "s1", {})
    assert "rebuilt the event-id index" not in caplog.text
    assert [n.split(".")[1:3] for n in index_files(roots["lake"])] == [
        ["at1", "n2"],
        ["at2", "n1"],
        ["at3", "n1"],
        ["at4", "n1"],
        ["at5", "n1"],
    ]
    again = run()
    accepted, conflicts, duplicates = ingest_module.commit_events(again, pl.concat(list(one.values())), "again", {})
    assert (accepted.height, conflicts.height, duplicates) == (0, 0, 6)
    assert lake_events(roots["lake"])["event_id"].n_unique() == lake_events(roots["lake"]).height == 6


def piece(rows: int, version: int, base: bool, name: str = "") -> dedupe_module.Piece:
    return dedupe_module.Piece(name or f"{'upto' if base else 'at'}{version}", rows, version, base)


@pytest.mark.parametrize(
    "pieces, rows, version, expected",
    [
        ([piece(5, 2, False), piece(3, 1, False)], 8, 2, ["at2", "at1"]),  # deltas only: a day since its first commit
        (
            [piece(10, 4, True), piece(5, 5, False), piece(7, 3, False)],
            15,
            5,
            ["upto4", "at5"],
        ),  # folded deltas left out
        ([piece(10, 4, True), piece(5, 5, False), piece(1, 6, False)], 15, 5, ["upto4", "at5"]),  # at6: a later commit
        ([piece(10, 4, True), piece(5, 6, False)], 17, 6, None),  # 2 rows of a commit without its delta
        (
            [piece(10, 4, True), piece(12, 5, True), piece(2, 5, False), piece(1, 6, False)],
            13,
            6,
            ["upto5", "at6"],  # the newest base that adds up
        ),
        ([piece(10, 4, True), piece(14, 7, True), piece(2, 5, False)], 12, 6, ["upto4", "at5"]),  # upto7: too new
        ([piece(10, 4, True), piece(5, 5, False)], 14, 5, None),  # rows removed since (retention): rebuild
    ],
)
def test_a_days_pieces_are_trusted_only_when_they_add_up_to_its_rows(pieces, rows, version, expected):
    """The newest base that, with the deltas of the commits after it, holds exactly the day's rows at
    the table's version; a piece of a later version is not part of that view; nothing else is trusted."""
    found = dedupe_module._adding_up(pieces, rows, version)
    assert (None if found is None else [p.path for p in found]) == expected


def test_an_index_a_run_could_not_write_is_rebuilt_and_the_run_still_succeeds(roots, now, monkeypatch, caplog):
    """The event-id index is a cache of the table: a run that fails to write it (storage trouble)
    still succeeds, and the next run rebuilds the days from their rows and knows every event."""
    expected = generate(roots["raw"], events=600, days=2, organizations=3, bad_share=0.0, now=now)

    def fail(*args, **kwargs):
        raise OSError("simulated storage error writing the index")

    monkeypatch.setattr(dedupe_module, "_write_days", fail)
    assert ingest(roots["raw"], roots["lake"], now=now).ingested == expected.valid_events
    assert "the event-id index was not written" in caplog.text
    assert not (Path(roots["lake"]) / "_state" / "event-ids").exists()
    monkeypatch.undo()
    redelivered = Path(roots["raw"]) / "again"
    shutil.copytree(roots["raw"], redelivered, ignore=shutil.ignore_patterns("again"))
    summary = ingest(roots["raw"], roots["lake"], now=now)
    assert summary.ingested == 0 and summary.duplicates == summary.lines > 0
    assert lake_events(roots["lake"])["event_id"].n_unique() == expected.valid_events


def test_absent_null_and_empty_optional_fields_are_the_same_event(roots, now):
    write_lines(
        Path(roots["raw"]) / "a.jsonl",
        [
            event(event_id="e1", region=""),
            {k: v for k, v in event(event_id="e1").items() if k != "region"},
            event(event_id="e1", region=None),
        ],
    )
    summary = ingest(roots["raw"], roots["lake"], now=now)
    assert (summary.ingested, summary.duplicates) == (1, 2)


CRASH_POINTS = [
    ("events files, after writing them", lk, "write_event_files", "after", 2),
    ("events commit, before", lk, "commit_event_files", "before", 2),
    ("events commit, after", lk, "commit_event_files", "after", 2),
    ("event-id index, after", dedupe_module.EventIndex, "add", "after", 2),
    ("quarantine commit, before", quarantine, "commit", "before", 2),
    ("quarantine commit, after", quarantine, "commit", "after", 2),
    ("ledger snapshot, before", ledger_module, "save", "before", 1),
]


@pytest.mark.parametrize("where, owner, name, when, call", CRASH_POINTS, ids=[c[0] for c in CRASH_POINTS])
def test_crash_at_any_step_then_rerun_loses_and_doubles_nothing(
    roots, now, monkeypatch, where, owner, name, when, call
):
    expected = generate(roots["raw"], events=1000, days=2, organizations=4, bad_share=0.01, now=now)
    real, calls = getattr(owner, name), {"n": 0}

    def crash_on_second_call(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call and when == "before":
            raise OSError(f"simulated crash before the {where}")
        result = real(*args, **kwargs)
        if calls["n"] == call and when == "after":
            raise OSError(f"simulated crash after the {where}")
        return result

    monkeypatch.setattr(owner, name, crash_on_second_call)
    with pytest.raises(OSError, match="simulated crash"):
        ingest(roots["raw"], roots["lake"], now=now, batch_bytes=40_000)
    monkeypatch.setattr(owner, name, real)
    ingest(roots["raw"], roots["lake"], now=now, batch_bytes=40_000)
    events = lake_events(roots["lake"])
    assert events.height == expected.valid_events and events["event_id"].n_unique() == expected.valid_events
    records = quarantine.read_all(Root.open(roots["lake"]))
    assert records.group_by("reason").len().sort("reason").rows() == sorted(expected.bad.items())
    assert records.select("source_file", "line_number").is_duplicated().sum() == 0
    assert ingest(roots["raw"], roots["lake"], now=now).files == 0


def test_a_big_file_is_committed_in_several_batches_and_resumes_where_it_stopped(roots, now, monkeypatch):
    raw = Path(roots["raw"])
    write_lines(raw / "big.jsonl", [event(event_id=f"e{i}", resource="r" * 200) for i in range(3000)] + ["{not json"])
    real, calls = quarantine.commit, {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(quarantine, "commit", crash_on_third)
    with pytest.raises(OSError):
        ingest(roots["raw"], roots["lake"], now=now, batch_bytes=200_000)
    monkeypatch.setattr(quarantine, "commit", real)
    done = lake_events(roots["lake"]).height
    assert 0 < done < 3000
    rerun = ingest(roots["raw"], roots["lake"], now=now, batch_bytes=200_000)
    assert rerun.ingested + rerun.duplicates + done >= 3000 and rerun.quarantined == {"malformed_json": 1}
    assert lake_events(roots["lake"])["event_id"].n_unique() == lake_events(roots["lake"]).height == 3000


def test_lake_is_a_delta_table_for_deltalake_polars_and_duckdb(roots, now):
    generate(roots["raw"], events=400, days=2, organizations=3, bad_share=0, redelivery_share=0, now=now)
    ingest(roots["raw"], roots["lake"], now=now)
    by_polars = pl.scan_delta(f"{roots['lake']}/events").collect()
    assert by_polars.schema["event_time"] == pl.Datetime("us", "UTC")
    assert set(by_polars.columns) >= {
        "event_id",
        "event_time",
        "user_email",
        "action",
        "action_type",
        "resource",
        "ip_address",
        "user_agent",
        "region",
        "attributes",
        "ingested_at",
        "source_file",
        "event_date",
        "organization_id",
    }
    assert (by_polars["event_time"].dt.date() == by_polars["event_date"]).all()
    table = DeltaTable(f"{roots['lake']}/events")
    assert table.metadata().partition_columns == ["event_date", "organization_id"]
    dataset = table.to_pyarrow_dataset()
    by_duck = duckdb.sql("select count(distinct event_id) from dataset").fetchall()[0][0]
    assert dataset.count_rows() == by_duck == by_polars.height == 400
    # data files stay where a hive reader expects them
    files = list(Path(roots["lake"], "events").glob("event_date=*/organization_id=*/*.parquet"))
    assert len(files) == len(table.file_uris())


def test_validation_report_is_stored_beside_the_batch(roots, now):
    generate(roots["raw"], events=200, days=1, organizations=2, now=now)
    summary = ingest(roots["raw"], roots["lake"], now=now)
    (batch,) = summary.batches
    result = json.loads((Path(roots["lake"]) / "_validation" / f"{batch}.json").read_text())
    assert result["success"] is True and len(result["results"]) > 10
    assert all(r["result"]["unexpected_count"] == 0 for r in result["results"] if "unexpected_count" in r["result"])
    html = (Path(roots["lake"]) / "_validation" / f"{batch}.html").read_text()
    assert "<html" in html.lower() and "audit_events" in html


def test_the_great_expectations_gate_fails_loudly_if_a_bad_row_slips_through(roots, now, monkeypatch):
    write_lines(Path(roots["raw"]) / "a.jsonl", [event(event_id="e1"), event(event_id="e2", ip_address="999.1.1.1")])
    real_route = ingest_module.route
    # a routing bug: every row "valid"
    monkeypatch.setattr(
        ingest_module,
        "route",
        lambda frame, window: real_route(frame, window).with_columns(reason=pl.lit(None, pl.String)),
    )
    with pytest.raises(ValidationFailed, match="ip_address"):
        ingest(roots["raw"], roots["lake"], now=now)
    assert lake_events(roots["lake"]).height == 0  # nothing bad reached the lake
    (report,) = (Path(roots["lake"]) / "_validation").glob("2*.json")
    failed = [r["result"] for r in json.loads(report.read_text())["results"] if not r["success"]]
    # a failed batch's report counts each unexpected value (GE's SUMMARY results)
    assert failed and failed[0]["partial_unexpected_counts"] == [{"value": "999.1.1.1", "count": 1}]
    events = Path(roots["lake"]) / "events"
    assert list(events.glob("event_date=*/*/*.parquet"))  # written while GE checked the batch, never committed
    vacuum(roots["lake"], hours=0)
    assert not list(events.glob("event_date=*/*/*.parquet"))


def test_great_expectations_checks_a_batch_while_its_files_are_written(roots, now, monkeypatch):
    """The batch's files are encoded and uploaded while the worker validates it; the commit waits."""
    write_lines(Path(roots["raw"]) / "a.jsonl", [event(event_id="e1"), event(event_id="e2")])
    writing, overlapped = threading.Event(), []
    real_validate, real_write = ingest_module.validate_batch, lk.write_event_files

    def validate(*args):
        overlapped.append(writing.wait(timeout=10))  # sequential code would only write after this returns
        return real_validate(*args)

    def write(*args, **kwargs):
        writing.set()
        return real_write(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "validate_batch", validate)
    monkeypatch.setattr(lk, "write_event_files", write)
    summary = ingest(roots["raw"], roots["lake"], now=now)
    assert overlapped == [True] and summary.ingested == 2 and len(summary.validation_reports) == 1


def test_unreadable_file_is_quarantined_and_the_run_goes_on(roots, now):
    raw = Path(roots["raw"])
    raw.mkdir(parents=True)
    (raw / "broken.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    write_lines(raw / "ok.jsonl", [event()])
    summary = ingest(roots["raw"], roots["lake"], now=now)
    assert summary.ingested == 1 and summary.quarantined == {"unreadable_file": 1}


def test_a_file_gone_between_listing_and_reading_is_passed_over_and_one_refused_is_named(roots, now, monkeypatch):
    """A producer renames its temporary file, or a lifecycle rule expires one, after the run listed it:
    nothing is left to read and it is no failure. A file the run may not read (here a symlink put
    in its place, which O_NOFOLLOW refuses) is named in ``failed`` and read by a later run."""
    from include.audit import raw as raw_module

    raw = Path(roots["raw"])
    write_lines(raw / "a.jsonl", [event(event_id="a")])
    write_lines(raw / "gone.jsonl", [event(event_id="gone")])
    write_lines(raw / "refused.jsonl", [event(event_id="refused")])
    write_lines(raw / "z.jsonl", [event(event_id="z")])
    listed = raw_module.discover

    def listed_then_changed(root):
        found = listed(root)
        (raw / "gone.jsonl").unlink()
        (raw / "refused.jsonl").rename(raw / "elsewhere")
        (raw / "refused.jsonl").symlink_to(raw / "elsewhere")
        return found

    monkeypatch.setattr(raw_module, "discover", listed_then_changed)
    summary = ingest(roots["raw"], roots["lake"], now=now)
    assert summary.ingested == 2 and list(summary.failed) == ["refused.jsonl"]
    assert "Too many levels of symbolic links" in summary.failed["refused.jsonl"]
    monkeypatch.setattr(raw_module, "discover", listed)
    (raw / "refused.jsonl").unlink()
    (raw / "elsewhere").rename(raw / "refused.jsonl")
    again = ingest(roots["raw"], roots["lake"], now=now)
    assert (again.ingested, again.failed) == (1, {})
    assert sorted(lake_events(roots["lake"])["event_id"]) == ["a", "refused", "z"]


def test_a_changed_raw_file_is_ingested_again_without_doubling(roots, now):
    path = write_lines(Path(roots["raw"]) / "a.jsonl", [event(event_id="e1")])
    ingest(roots["raw"], roots["lake"], now=now)
    write_lines(path, [event(event_id="e1"), event(event_id="e2")])
    summary = ingest(roots["raw"], roots["lake"], now=now)
    assert (summary.ingested, summary.duplicates) == (1, 1)
    assert lake_events(roots["lake"]).height == 2


def test_an_index_the_previous_release_wrote_is_used_where_it_adds_up(roots, now, caplog):
    """After an upgrade, the consolidated file of the previous release (no version in its footer)
    still serves the days it holds, so the first run rebuilds nothing; the previous release's
    per-day files are not read, and the next consolidation removes them."""
    generate(roots["raw"], events=300, days=2, organizations=2, bad_share=0.0, now=now)
    ingest(roots["raw"], roots["lake"], now=now, validate=False)
    lake = Root.open(roots["lake"])
    folder = Path(roots["lake"]) / "_state" / "event-ids"
    shutil.rmtree(folder)
    folder.mkdir()
    events = lake_events(roots["lake"])
    rows = {str(d): n for d, n in events.group_by("event_date").len().iter_rows()}
    entries = events.select("event_date").with_columns(dedupe_module.fingerprints(events))
    table = entries.to_arrow().cast(lk.arrow_schema(dict(dedupe_module._NO_ENTRIES.schema)))
    table = table.replace_schema_metadata({"rows": json.dumps(rows), "hash": dedupe_module.HASH_FUNCTION})
    pq.write_table(table, folder / "all.parquet")
    stale = folder / f"event_date={min(rows)}.parquet"
    pq.write_table(table.slice(0, 1), stale)  # the previous release's per-day file: not read
    caplog.set_level("INFO")
    shutil.copytree(roots["raw"], Path(roots["raw"]) / "again")
    summary = ingest(roots["raw"], roots["lake"], now=now, validate=False)
    assert summary.ingested == 0 and summary.duplicates == summary.lines > 0
    assert "rebuilt the event-id index" not in caplog.text
    dedupe_module.EventIndex(lake).consolidate(lk.open_events(lake))
    assert index_files(roots["lake"]) == ["all.parquet"]
