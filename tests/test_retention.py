"""Retention drops expired partitions only once their daily export is current."""

from datetime import date
from pathlib import Path

from include.audit import lake as lk
from include.audit.exports import export_daily
from include.audit.ingest import ingest
from include.audit.retention import expired_dates, retain
from include.audit.storage import Root

from .helpers import event, write_lines


def test_expired_dates_is_strictly_more_than_the_window():
    days = [date(2026, 8, 27), date(2026, 8, 28), date(2026, 8, 29)]
    assert expired_dates(days, date(2026, 11, 26), 90) == [date(2026, 8, 27)]


def lake_with_two_days(roots, now):
    write_lines(
        Path(roots["raw"]) / "a.jsonl",
        [
            event(event_id="old-a", event_time="2026-11-20T10:00:00Z"),
            event(event_id="old-b", event_time="2026-11-20T11:00:00Z", organization_id="globex"),
            event(event_id="new", event_time="2026-11-25T10:00:00Z"),
        ],
    )
    ingest(roots["raw"], roots["lake"], now=now)
    return Root.open(roots["lake"])


def test_drops_only_exported_expired_partitions_and_reports_the_rest(roots, now):
    lake = lake_with_two_days(roots, now)
    export_daily(roots["lake"], roots["exports"], date(2026, 11, 20), ["acme"])
    # with a 3-day window on 2026-11-24, 2026-11-20 is expired, 2026-11-25 is not
    result = retain(roots["lake"], roots["exports"], date(2026, 11, 24), days=3)
    assert result.dropped == ["2026-11-20/acme"]
    assert result.kept == {"2026-11-20/globex": "daily export is missing"}
    assert lk.organizations(lake, date(2026, 11, 20)) == ["globex"]
    assert lk.event_dates(lake) == [date(2026, 11, 20), date(2026, 11, 25)]
    # the archived CSV is never touched
    assert (Path(roots["exports"]) / "acme/2026/11/20/audit-log_acme_2026-11-20.csv").exists()


def test_stale_export_blocks_the_drop_until_reexported(roots, now):
    lake_with_two_days(roots, now)
    export_daily(roots["lake"], roots["exports"], date(2026, 11, 20))
    write_lines(Path(roots["raw"]) / "late.jsonl", [event(event_id="late", event_time="2026-11-20T23:00:00Z")])
    ingest(roots["raw"], roots["lake"], now=now)
    result = retain(roots["lake"], roots["exports"], date(2026, 11, 24), days=3)
    assert result.kept == {"2026-11-20/acme": "daily export is stale"} and result.dropped == ["2026-11-20/globex"]
    export_daily(roots["lake"], roots["exports"], date(2026, 11, 20))
    assert retain(roots["lake"], roots["exports"], date(2026, 11, 24), days=3).dropped == ["2026-11-20/acme"]
    assert lk.event_dates(Root.open(roots["lake"])) == [date(2026, 11, 25)]


def test_force_drops_unexported_partitions_and_dry_run_drops_nothing(roots, now):
    lake = lake_with_two_days(roots, now)
    dry = retain(roots["lake"], roots["exports"], date(2026, 11, 24), days=3, force=True, dry_run=True)
    assert dry.dropped == ["2026-11-20/acme", "2026-11-20/globex"]
    report = dry.as_dict()
    assert report["would_drop"] == dry.dropped and "dropped" not in report and report["receipts"] == []
    assert lk.event_dates(lake) == [date(2026, 11, 20), date(2026, 11, 25)]
    assert not Path(roots["exports"]).exists()  # a dry run writes no receipt
    forced = retain(roots["lake"], roots["exports"], date(2026, 11, 24), days=3, force=True)
    assert forced.dropped == dry.dropped and lk.event_dates(lake) == [date(2026, 11, 25)]
    assert retain(roots["lake"], roots["exports"], date(2026, 11, 24), days=3).dropped == []  # rerun: nothing


def test_an_event_ingested_between_the_archive_check_and_the_delete_is_never_dropped(roots, now, monkeypatch):
    """A real ingest commits a late event into an expired, archived day after retention counted and
    checked it, before its delete: the delete conflicts, the run checks again, finds the archive
    stale and keeps the day (before: the late event was deleted without any archive copy)."""
    from include.audit import retention

    lake_with_two_days(roots, now)
    export_daily(roots["lake"], roots["exports"], date(2026, 11, 20))
    write_lines(Path(roots["raw"]) / "late.jsonl", [event(event_id="late", event_time="2026-11-20T23:00:00Z")])
    real_receipt = retention.write_receipt
    receipts = []

    def ingest_then_write_receipt(*args, **kwargs):
        if not receipts:
            ingest(roots["raw"], roots["lake"], now=now)
        receipts.append(real_receipt(*args, **kwargs))
        return receipts[-1]

    monkeypatch.setattr(retention, "write_receipt", ingest_then_write_receipt)
    result = retain(roots["lake"], roots["exports"], date(2026, 11, 24), days=3)
    assert result.kept == {"2026-11-20/acme": "daily export is stale"}
    assert result.dropped == ["2026-11-20/globex"]
    lake = Root.open(roots["lake"])
    assert lk.organizations(lake, date(2026, 11, 20)) == ["acme"]
    assert lk.partition_row_counts(lake, [date(2026, 11, 20)]) == {(date(2026, 11, 20), "acme"): 2}
    history = [lk.read_commit_metadata(c) for c in lk.events_table(lake).open().history()]
    (dropped,) = [m for m in history if m.get("operation") == "retention"]
    assert dropped["dropped"] == ["2026-11-20/globex"] and dropped["receipts"] == result.receipts


def test_one_organizations_failing_archive_keeps_its_partitions_and_drops_the_others(roots, now, monkeypatch, capsys):
    """A receipt that cannot be written (the organization's archive storage fails) keeps that
    organization's expired partitions; the others' are dropped; retain reports it and exits 1, and
    the next run drops the rest."""
    import json

    from include.audit import cli

    lake = lake_with_two_days(roots, now)
    export_daily(roots["lake"], roots["exports"], date(2026, 11, 20))
    create = Root.create_if_absent

    def globex_storage_fails(self: Root, path: str, data: bytes) -> str | None:
        if "/globex/" in path:
            raise OSError(5, "Input/output error")
        return create(self, path, data)

    argv = ["retain", "--lake-root", roots["lake"], "--export-root", roots["exports"], "--today", "2026-11-24"]
    with monkeypatch.context() as patched:
        patched.setattr(Root, "create_if_absent", globex_storage_fails)
        capsys.readouterr()
        assert cli.main([*argv, "--days", "3"]) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["dropped"] == ["2026-11-20/acme"] and list(report["failed"]) == ["globex"]
    assert report["kept"] == {"2026-11-20/globex": f"archive failed: {report['failed']['globex']}"}
    assert err.strip().splitlines()[-1] == f"error: globex: {report['failed']['globex']}"
    assert lk.organizations(lake, date(2026, 11, 20)) == ["globex"]
    assert not list((Path(roots["exports"]) / "globex").rglob("_receipts/*"))
    assert retain(roots["lake"], roots["exports"], date(2026, 11, 24), days=3).dropped == ["2026-11-20/globex"]
    assert lk.event_dates(Root.open(roots["lake"])) == [date(2026, 11, 25)]
