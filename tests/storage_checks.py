"""What the storage tests assert, for any root (local or s3://): every event exactly once, nothing half-written."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import polars as pl

from include.audit import cli
from include.audit import lake as lk
from include.audit.raw import signature
from include.audit.storage import Root


@dataclass(frozen=True)
class Storage:
    """The three roots of one test, all local or all below one s3:// prefix."""

    kind: str
    raw: str
    lake: str
    exports: str


def run_cli(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """Run the CLI in this process: exit code, parsed JSON stdout (None on failure), stderr."""
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def lake_event_ids(lake_url: str) -> pl.Series:
    """The event_id of every row of the events table's latest version."""
    table = lk.events_table(Root.open(lake_url)).open()
    if table is None:
        return pl.Series("event_id", [], pl.String)
    return pl.from_arrow(table.to_pyarrow_table(columns=["event_id"]))["event_id"]  # delta-rs's own reader


def export_event_ids(export_url: str, on_demand: bool = False) -> pl.Series:
    """The event_id column of every daily CSV (or every on-demand CSV) below the export root."""
    exports = Root.open(export_url)
    exports.fs.invalidate_cache()
    paths = [p for p in exports.find(exports.path, (".csv",)) if ("/_on-demand/" in p or "/adhoc/" in p) == on_demand]
    frames = [pl.read_csv(exports.read_bytes(p), infer_schema=False).select("event_id") for p in paths]
    return pl.concat(frames)["event_id"] if frames else pl.Series("event_id", [], pl.String)


def lake_dates(lake_url: str) -> list[date]:
    lake = Root.open(lake_url)
    lake.fs.invalidate_cache()
    return lk.event_dates(lake)


def export_every_day(capsys, storage: Storage) -> int:
    """``export-daily`` for every date in the lake; the rows written (0 when all were current)."""
    written = 0
    for day in lake_dates(storage.lake):
        code, result, err = run_cli(
            capsys,
            "export-daily",
            "--lake-root",
            storage.lake,
            "--export-root",
            storage.exports,
            "--date",
            day.isoformat(),
        )
        assert code == 0, err
        written += sum(f["rows"] for f in result["files"] if not f["skipped"])
    return written


def assert_exactly_once(storage: Storage, valid_events: int) -> None:
    """Every valid event is in the lake once and in the daily exports once, and nothing else is."""
    in_lake = lake_event_ids(storage.lake)
    exported = export_event_ids(storage.exports)
    assert in_lake.len() == valid_events and in_lake.n_unique() == valid_events
    assert exported.len() == valid_events and set(exported) == set(in_lake)


def listing(url: str) -> dict[str, str]:
    """Every file below a root with its size and ETag/mtime: equal listings mean nothing was written."""
    root = Root.open(url)
    root.fs.invalidate_cache()
    return {root.relative(p): signature(info) for p, info in root.find_with_details(root.path).items()}


def hidden_leftovers(url: str, names: Sequence[str] = (".tmp",)) -> list[str]:
    """Temporary files a write left behind (there must be none)."""
    return [p for p in listing(url) if p.endswith(tuple(names))]
