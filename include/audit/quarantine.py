"""The quarantine: every line that is not a valid event, with exactly one reason. Nothing is dropped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from .events import UTC_DATETIME
from .lake import QUARANTINE, read_parquet, to_parquet
from .storage import Root

SCHEMA: dict[str, pl.DataType] = {
    "reason": pl.String(),
    "detail": pl.String(),
    "source_file": pl.String(),
    "line_number": pl.Int64(),
    "raw": pl.String(),
    "quarantined_at": UTC_DATETIME,
    "batch_id": pl.String(),
}


def records(rows: list[dict[str, Any]] | pl.DataFrame, at: datetime, batch_id: str) -> pl.DataFrame:
    """Quarantine records from dicts or a frame holding reason, detail, source_file, line_number, raw."""
    frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows, schema={
        c: SCHEMA[c] for c in ("reason", "detail", "source_file", "line_number", "raw")})
    return frame.select(
        pl.col("reason", "detail", "source_file", "line_number", "raw"),
        pl.lit(at.astimezone(UTC), UTC_DATETIME).alias("quarantined_at"),
        pl.lit(batch_id).alias("batch_id"),
    ).cast(SCHEMA)  # type: ignore[arg-type]


def path_for(lake: Root, batch_id: str, at: datetime) -> str:
    return lake.join(QUARANTINE, f"ingest_date={at.astimezone(UTC).date().isoformat()}", f"part-{batch_id}.parquet")


def write(lake: Root, frame: pl.DataFrame, batch_id: str, at: datetime) -> str | None:
    """Write one batch's quarantine records (if any) as a single Parquet file."""
    if frame.is_empty():
        return None
    path = path_for(lake, batch_id, at)
    lake.write_bytes(path, to_parquet(frame.sort("source_file", "line_number", nulls_last=True)))
    return path


def read_all(lake: Root) -> pl.DataFrame:
    """Every quarantine record in the lake."""
    return read_parquet(lake, lake.find(lake.join(QUARANTINE), (".parquet",)), list(SCHEMA), SCHEMA)
