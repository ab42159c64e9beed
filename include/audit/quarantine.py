"""The quarantine: every line that is not a valid event, with exactly one reason. Nothing is dropped.

A Delta table at ``<lake>/quarantine`` partitioned by ``ingest_date``. Each ingest batch adds its
records in one commit, and that commit is also the batch's commit point: its metadata names the
raw files (and how far into each) the batch consumed (see ``ledger``). ``replayed_at`` and
``replay_outcome`` are set once when ``replay`` re-runs a record through the rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

import polars as pl

from . import lake as lk
from .events import UTC_DATETIME
from .storage import Root

SCHEMA: dict[str, pl.DataType] = {
    "reason": pl.String(),
    "detail": pl.String(),
    "source_file": pl.String(),
    "line_number": pl.Int64(),
    "raw": pl.String(),
    "quarantined_at": UTC_DATETIME,
    "batch_id": pl.String(),
    "replayed_at": UTC_DATETIME,
    "replay_outcome": pl.String(),
}
TABLE_SCHEMA: dict[str, pl.DataType] = {**SCHEMA, "ingest_date": pl.Date()}
PARTITION_COLUMNS = ["ingest_date"]
RECORD_COLUMNS = ("reason", "detail", "source_file", "line_number", "raw")


def table(lake: Root) -> lk.Table:
    return lk.Table.at(lake, lk.QUARANTINE)


def open_table(lake: Root) -> Any:
    """The quarantine table, created if the lake is new."""
    return table(lake).ensure(lk.arrow_schema(TABLE_SCHEMA), PARTITION_COLUMNS)


def records(rows: list[dict[str, Any]] | pl.DataFrame, at: datetime, batch_id: str) -> pl.DataFrame:
    """Quarantine records from dicts or a frame holding reason, detail, source_file, line_number, raw."""
    frame = (
        rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows, schema={c: SCHEMA[c] for c in RECORD_COLUMNS})
    )
    return frame.select(
        *(pl.col(c).cast(SCHEMA[c]) for c in RECORD_COLUMNS),
        pl.lit(at.astimezone(UTC), UTC_DATETIME).alias("quarantined_at"),
        pl.lit(batch_id, pl.String).alias("batch_id"),
        pl.lit(None, UTC_DATETIME).alias("replayed_at"),
        pl.lit(None, pl.String).alias("replay_outcome"),
    )


def empty() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


def commit(quarantine: Any, frame: pl.DataFrame, at: datetime, metadata: dict[str, str]) -> int:
    """Add one batch's records (possibly none: the commit still records the batch) as one commit.

    Like every ingest commit it lands on exactly the version ``quarantine`` was read at, or
    raises CommitConflict.
    """
    rows = frame.sort("source_file", "line_number", nulls_last=True).with_columns(
        ingest_date=pl.lit(at.astimezone(UTC).date(), pl.Date)
    )
    return lk.append(quarantine, lk.to_arrow(rows, TABLE_SCHEMA), PARTITION_COLUMNS, metadata)


def read_all(lake: Root, since: date | None = None, reasons: Iterable[str] | None = None) -> pl.DataFrame:
    """Quarantine records (every one, or those ingested since ``since`` with one of ``reasons``)."""
    opened = table(lake).open()
    if opened is None:
        return empty()
    filters = [("ingest_date", ">=", since.isoformat())] if since else None
    frame = lk.read_table(lake, opened, TABLE_SCHEMA, filters, list(SCHEMA))
    if reasons is not None:
        frame = frame.filter(pl.col("reason").is_in(list(reasons)))
    return frame.cast(SCHEMA)  # type: ignore[arg-type]


def reason_counts(lake: Root) -> dict[str, int]:
    """Quarantine records per reason (only the reason column is read)."""
    opened = table(lake).open()
    if opened is None:
        return {}
    counts = lk.read_table(lake, opened, TABLE_SCHEMA, None, ["reason"]).group_by("reason").len()
    return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))


RAW_SHOWN = 2000
"""Characters of a quarantined line the page shows (the table keeps up to the line limit)."""


def view(lake: Root, since: date, reason: str | None, page: int, size: int) -> dict[str, Any]:
    """The quarantine as the page shows it: counts by ingest day and reason since ``since``, and one page
    of records (newest first) with their detail, source, raw line (cut to RAW_SHOWN) and replay outcome."""
    records = read_all(lake, since=since, reasons=[reason] if reason else None)
    counts = (
        records.group_by(pl.col("quarantined_at").dt.date().alias("day"), "reason")
        .len()
        .sort("day", "reason", descending=[True, False])
    )
    shown = records.sort(
        "quarantined_at", "source_file", "line_number", descending=[True, False, False], nulls_last=True
    ).slice((page - 1) * size, size)
    items = shown.select(
        pl.col("quarantined_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").alias("quarantinedAt"),
        "reason",
        "detail",
        pl.col("source_file").alias("sourceFile"),
        pl.col("line_number").alias("line"),
        pl.col("raw").str.slice(0, RAW_SHOWN).alias("raw"),
        pl.col("raw").str.len_chars().alias("rawLength"),
        pl.col("replayed_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").alias("replayedAt"),
        pl.col("replay_outcome").alias("replayOutcome"),
    ).to_dicts()
    return {
        "since": since.isoformat(),
        "reason": reason,
        "total": records.height,
        "page": page,
        "pageSize": size,
        "counts": [{"day": d.isoformat(), "reason": r, "count": n} for d, r, n in counts.iter_rows()],
        "items": items,
    }
