"""CSV exports: the exact format, idempotency, late data, and the on-demand filter."""

import csv
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from include.audit.exports import (
    HEADER,
    daily_path,
    export_daily,
    export_filtered,
    export_status,
    neutralize_formulas,
    pending_exports,
)
from include.audit.ingest import ingest
from include.audit.inputs import BadInput
from include.audit.query import EventFilter
from include.audit.retention import retain
from include.audit.status import lake_status
from include.audit.storage import Root
from include.audit.verify import verify

from .helpers import event, write_lines

DAY = date(2026, 11, 25)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def ingest_lines(roots, now, name, lines):
    write_lines(Path(roots["raw"]) / name, lines)
    return ingest(roots["raw"], roots["lake"], now=now)


def test_daily_export_format(roots, now):
    ingest_lines(
        roots,
        now,
        "a.jsonl",
        [
            event(event_id="b", event_time="2026-11-25T10:00:00.5+01:00"),
            event(
                event_id="a", event_time="2026-11-25T09:00:00.5Z", resource='x, "y"\nz', user_agent="=cmd|' /C calc'!A0"
            ),
            event(
                event_id="c",
                event_time="2026-11-25T23:59:59.999999Z",
                resource="-1+1",
                region="",
                user_email="-dash@acme.com",
            ),
            event(event_id="d", event_time="2026-11-26T00:00:00Z"),  # next UTC day
            event(event_id="e", event_time="2026-11-25T09:00:00.5Z", resource="\ttab", user_agent="+plus"),
        ],
    )
    (result,) = export_daily(roots["lake"], roots["exports"], DAY)
    path = Path(roots["exports"]) / "acme/2026/11/25/audit-log_acme_2026-11-25.csv"
    assert result.path == str(path) and result.rows == 4
    text = path.read_text(encoding="utf-8")
    assert (
        text.splitlines()[0]
        == HEADER
        == ("time,organization_id,user,action,action_type,resource,ip_address,user_agent,region,event_id")
    )
    rows = read_csv(path)
    # sorted by time, then event_id; the UTC instant, six digits, Z
    assert [(r["time"], r["event_id"]) for r in rows] == [
        ("2026-11-25T09:00:00.500000Z", "a"),
        ("2026-11-25T09:00:00.500000Z", "b"),
        ("2026-11-25T09:00:00.500000Z", "e"),
        ("2026-11-25T23:59:59.999999Z", "c"),
    ]
    assert rows[0]["resource"] == 'x, "y"\nz'  # RFC 4180 quoting round-trips
    assert rows[0]["user_agent"] == "'=cmd|' /C calc'!A0"
    assert rows[2]["resource"] == "'\ttab" and rows[2]["user_agent"] == "'+plus"
    assert rows[3]["resource"] == "'-1+1" and rows[3]["region"] == "" and rows[3]["user"] == "'-dash@acme.com"
    assert rows[0]["action_type"] == "Job Run" and rows[0]["organization_id"] == "acme"
    assert '"x, ""y""\nz"' in text


def test_user_cells_with_formula_prefixes_are_neutralised_but_others_untouched():
    frame = pl.DataFrame({"a": ["=1", "+1", "-1", "@x", "\tx", "\rx", "a=1", None]})
    assert neutralize_formulas(frame)["a"].to_list() == ["'=1", "'+1", "'-1", "'@x", "'\tx", "'\rx", "a=1", None]


def test_reexport_writes_nothing_and_late_events_make_version_2(roots, now):
    ingest_lines(
        roots, now, "a.jsonl", [event(event_id=f"e{i}", event_time=f"2026-11-25T1{i}:00:00Z") for i in range(5)]
    )
    lake, exports = Root.open(roots["lake"]), Root.open(roots["exports"])
    (first,) = export_daily(roots["lake"], roots["exports"], DAY)
    path = Path(daily_path(exports, "acme", DAY))
    original = path.read_bytes()
    assert export_status(lake, exports, DAY, "acme") == "current" and first.version == 1
    before = sorted(Path(roots["exports"]).rglob("*"))
    (forced,) = export_daily(roots["lake"], roots["exports"], DAY, force=True)  # same bytes: nothing new
    (again,) = export_daily(roots["lake"], roots["exports"], DAY)
    assert forced.skipped and again.skipped and again.version == 1
    assert sorted(Path(roots["exports"]).rglob("*")) == before and path.read_bytes() == original
    ingest_lines(roots, now, "late.jsonl", [event(event_id="late", event_time="2026-11-25T00:00:01Z")])
    assert export_status(lake, exports, DAY, "acme") == "stale"
    (redone,) = export_daily(roots["lake"], roots["exports"], DAY)
    assert redone.rows == 6 and redone.version == 2 and not redone.skipped
    assert redone.path == daily_path(exports, "acme", DAY, 2) and redone.path.endswith("_2026-11-25.v2.csv")
    assert read_csv(redone.path)[0]["event_id"] == "late" and path.read_bytes() == original
    assert export_status(lake, exports, DAY, "acme") == "current"


def test_an_export_stopped_between_its_csv_and_its_manifest_is_finished_by_the_next_run(roots, now, monkeypatch):
    """A run that stopped after writing the CSV (killed, or its manifest's request failed) left a CSV
    without a manifest: the next run writes that manifest (it used to see the CSV, take it for a
    concurrent export's and stop, forever), so the day is current, verifiable and retainable."""
    from include.audit import archive

    ingest_lines(
        roots, now, "a.jsonl", [event(event_id=f"e{i}", event_time=f"2026-11-25T1{i}:00:00Z") for i in range(3)]
    )
    lake, exports = Root.open(roots["lake"]), Root.open(roots["exports"])

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(archive, "append", stopped)
        with pytest.raises(KeyboardInterrupt):
            export_daily(roots["lake"], roots["exports"], DAY)
    path = Path(daily_path(exports, "acme", DAY))
    assert path.exists() and export_status(lake, exports, DAY, "acme") == "missing"
    (done,) = export_daily(roots["lake"], roots["exports"], DAY)
    assert (done.version, done.rows, done.skipped, done.path) == (1, 3, False, str(path))
    assert export_status(lake, exports, DAY, "acme") == "current"
    assert [p.name for p in path.parent.iterdir()] == sorted([path.name, path.name.replace(".csv", ".manifest.json")])
    (again,) = export_daily(roots["lake"], roots["exports"], DAY)
    assert again.skipped and again.version == 1
    assert verify(roots["exports"], DAY, "acme")["ok"]


def test_one_organizations_failing_archive_does_not_stop_the_others(roots, now, monkeypatch, capsys):
    """export-daily archives every other organization when one's storage fails, then exits 1 with
    one line for it; the next run archives the one that failed (a poison pill for none)."""
    from include.audit import cli

    ingest_lines(
        roots, now, "a.jsonl", [event(event_id=f"{org}-1", organization_id=org) for org in ("acme", "globex", "zeta")]
    )
    exports = Root.open(roots["exports"])
    create = Root.create_if_absent

    def globex_storage_fails(self: Root, path: str, data: bytes) -> str | None:
        if "/globex/" in path:
            raise OSError(5, "Input/output error")
        return create(self, path, data)

    argv = ["export-daily", "--lake-root", roots["lake"], "--export-root", roots["exports"], "--date", DAY.isoformat()]
    with monkeypatch.context() as patched:
        patched.setattr(Root, "create_if_absent", globex_storage_fails)
        capsys.readouterr()
        assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert [f["organization_id"] for f in report["files"]] == ["acme", "zeta"] and list(report["failed"]) == ["globex"]
    assert err.strip().splitlines() == [f"error: globex: {report['failed']['globex']}"]
    assert "Input/output error" in err
    assert [o for o in ("acme", "globex", "zeta") if Path(daily_path(exports, o, DAY)).exists()] == ["acme", "zeta"]
    capsys.readouterr()
    assert cli.main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert {f["organization_id"]: f["skipped"] for f in again["files"]} == {"acme": True, "globex": False, "zeta": True}


def test_each_organization_gets_its_own_file(roots, now):
    ingest_lines(
        roots,
        now,
        "a.jsonl",
        [
            event(event_id="1"),
            event(event_id="2", organization_id="globex"),
            event(event_id="3", organization_id="globex"),
        ],
    )
    results = {r.organization_id: r.rows for r in export_daily(roots["lake"], roots["exports"], DAY)}
    assert results == {"acme": 1, "globex": 2}
    named_twice = export_daily(roots["lake"], roots["exports"], DAY, ["globex", "globex"])
    assert [(r.organization_id, r.rows) for r in named_twice] == [("globex", 2)]
    assert (Path(roots["exports"]) / "globex/2026/11/25/audit-log_globex_2026-11-25.csv").exists()
    # a day without events: each organization active in the window gets a header-only heartbeat
    quiet = export_daily(roots["lake"], roots["exports"], date(2026, 11, 26))
    assert {(r.organization_id, r.rows) for r in quiet} == {("acme", 0), ("globex", 0)}
    assert Path(quiet[0].path).read_text() == HEADER + "\n"
    assert export_daily(roots["lake"], roots["exports"], date(2026, 11, 20)) == []  # before any event


def _range(**kw) -> EventFilter:
    defaults = dict(
        organization_id="acme", start=datetime(2026, 11, 24, tzinfo=UTC), end=datetime(2026, 11, 26, 23, 59, tzinfo=UTC)
    )
    return EventFilter.from_fields(**{**defaults, **kw})


@pytest.fixture
def small_lake(roots, now):
    ingest_lines(
        roots,
        now,
        "a.jsonl",
        [
            event(event_id="1", event_time="2026-11-24T00:00:00Z", user_email="Alice@acme.com"),
            event(event_id="2", event_time="2026-11-25T12:00:00Z", action="DeleteFile", user_agent="Safari/17"),
            event(event_id="3", event_time="2026-11-26T11:00:00Z", user_email="bob@acme.com", region="aws-eu-west-1"),
            event(event_id="4", event_time="2026-11-25T12:00:00Z", organization_id="globex"),
        ],
    )
    return roots


@pytest.mark.parametrize(
    "flt, ids",
    [
        (_range(), ["1", "2", "3"]),
        (_range(start=datetime(2026, 11, 24, tzinfo=UTC), end=datetime(2026, 11, 24, tzinfo=UTC)), ["1"]),  # inclusive
        (_range(search="SAFARI"), ["2"]),
        (_range(search="eu-west"), ["3"]),
        (_range(search="file modifications"), ["2"]),  # action_type column
        (_range(search="2026-11-26T11"), ["3"]),  # the time as exported
        (_range(users=("ALICE@acme.com",)), ["1", "2"]),  # emails match case-insensitively
        (_range(users=("bob@acme.com",)), ["3"]),
        (_range(actions=("DeleteFile", "CreateJobRun")), ["1", "2", "3"]),
        (_range(actions=("DeleteFile",)), ["2"]),
        (_range(organization_id="globex"), ["4"]),
    ],
)
def test_on_demand_export_filters(small_lake, tmp_path, flt, ids):
    out = tmp_path / "out.csv"
    result = export_filtered(small_lake["lake"], flt, str(out))
    assert [r["event_id"] for r in read_csv(out)] == ids and result.rows == len(ids)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(start=datetime(2026, 11, 25)), "no timezone"),
        (dict(start=datetime(2026, 11, 27, tzinfo=UTC)), "after end"),
        (dict(organization_id="../etc"), "invalid organization id"),
        (dict(actions=("Nope",)), "unknown action"),
    ],
)
def test_bad_filters_are_refused(kwargs, message):
    with pytest.raises(BadInput, match=message):
        _range(**kwargs)


def test_the_daily_sweep_finds_stale_and_missing_days_and_heartbeats(roots, now):
    ingest_lines(
        roots,
        now,
        "a.jsonl",
        [
            event(event_id="a1", event_time="2026-11-22T10:00:00Z"),
            event(event_id="a2", event_time="2026-11-24T10:00:00Z"),
            event(event_id="g1", event_time="2026-11-24T10:00:00Z", organization_id="globex"),
        ],
    )
    for day in (date(2026, 11, 22), date(2026, 11, 24)):
        export_daily(roots["lake"], roots["exports"], day)
    ingest_lines(roots, now, "late.jsonl", [event(event_id="late", event_time="2026-11-22T23:00:00Z")])
    pending = pending_exports(roots["lake"], roots["exports"], DAY)
    assert pending == [
        (date(2026, 11, 22), "acme"),  # stale: it gained an event
        (date(2026, 11, 23), "acme"),  # never archived: a heartbeat is due
        (DAY, "acme"),
        (DAY, "globex"),  # the export date, for every organization active in the window
    ]
    status = lake_status(roots["lake"], roots["exports"])["archive"]
    assert status["acme"]["stale_days"] == ["2026-11-22"] and "2026-11-23" in status["acme"]["missing_days"]
    assert status["globex"]["days_archived"] == 1 and status["globex"]["first_day"] == "2026-11-24"


def test_an_unreadable_archive_is_one_organizations_problem_in_the_daily_sweep(roots, now):
    """A manifest that no longer parses (a damaged or tampered archive) used to fail the sweep that
    lists the day's work, so no organization was archived; now every other organization's work is
    listed, and the damaged one's export of the day is tried (and fails, visibly, on its own).
    ``status`` reports the damage in that organization's entry."""
    ingest_lines(
        roots,
        now,
        "a.jsonl",
        [
            event(event_id="a1", event_time="2026-11-24T10:00:00Z"),
            event(event_id="g1", event_time="2026-11-24T10:00:00Z", organization_id="globex"),
        ],
    )
    export_daily(roots["lake"], roots["exports"], date(2026, 11, 24))
    ingest_lines(roots, now, "late.jsonl", [event(event_id="late", event_time="2026-11-24T23:00:00Z")])
    manifest = Path(roots["exports"]) / "globex/2026/11/24/audit-log_globex_2026-11-24.manifest.json"
    manifest.write_text("{not json")
    pending = pending_exports(roots["lake"], roots["exports"], DAY)
    assert pending == [(date(2026, 11, 24), "acme"), (DAY, "acme"), (DAY, "globex")]
    health = lake_status(roots["lake"], roots["exports"])["archive"]  # status too: the damage, beside the rest
    assert health["acme"]["stale_days"] == ["2026-11-24"] and "error" not in health["acme"]
    assert "JSONDecodeError" in health["globex"]["error"] and health["globex"]["days_archived"] is None


def test_an_archive_goes_on_after_its_organizations_events_leave_the_window(roots, now):
    """An organization quiet for longer than the retention window (2 days here) keeps its daily
    heartbeats, also once retention has dropped its events: its archive never has a gap."""
    ingest_lines(roots, now, "a.jsonl", [event(event_id="a1", event_time="2026-11-20T10:00:00Z")])
    (Path(roots["exports"]) / "Not an org").mkdir(parents=True)  # a stray folder is no organization
    first = date(2026, 11, 20)
    for n in range(8):
        day = first + timedelta(days=n)
        for when, org in pending_exports(roots["lake"], roots["exports"], day, days=2):
            export_daily(roots["lake"], roots["exports"], when, [org])
        retain(roots["lake"], roots["exports"], day, days=2)
    assert lake_status(roots["lake"], roots["exports"])["events"] == 0  # retention dropped the only event
    last = first + timedelta(days=7)
    report = verify(roots["exports"], last)
    assert report["ok"] and report["organizations"]["acme"]["days"] == 8
    assert list((Path(roots["exports"]) / "Not an org").iterdir()) == []
    # the daily export of any later day keeps the chain going; an earlier day does not start a new one
    assert [(r.organization_id, r.rows) for r in export_daily(roots["lake"], roots["exports"], last)] == [("acme", 0)]
    assert export_daily(roots["lake"], roots["exports"], first - timedelta(days=1)) == []


def test_an_on_demand_rerun_with_other_rows_gets_a_new_name(small_lake, tmp_path):
    out = tmp_path / "od" / "range.csv"
    first = export_filtered(small_lake["lake"], _range(), str(out), never_overwrite=True)
    again = export_filtered(small_lake["lake"], _range(), str(out), never_overwrite=True)
    assert again.path == first.path == str(out) and again.version == 1
    original = out.read_bytes()
    narrower = export_filtered(small_lake["lake"], _range(users=("bob@acme.com",)), str(out), never_overwrite=True)
    assert narrower.path == str(tmp_path / "od" / "range.v2.csv") and narrower.rows == 1
    assert out.read_bytes() == original
