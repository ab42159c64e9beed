"""Exactly-once: each event_id enters the lake once, whichever day and batch it comes back in.

The first version of an event_id wins: the lake's, else the earliest in the batch. A later copy
with the same content is a duplicate (counted, kept once); with other content it is a
``conflicting_duplicate``. To find earlier versions without scanning the lake, an index keeps a
64-bit hash of every event_id and of its content per event date (16 bytes an event): a re-delivery
is recognised from the index alone, and only an event_id whose content differs is looked up in
the lake (its event_id column only, for exactness). The index is one consolidated file for all days
(``_state/event-ids/all.parquet``, rewritten by daily maintenance) plus one file per day changed
since (``event_date=D.parquet``), so a run reads a bounded number of objects however many days
the lake holds. A day's entry is trusted while its row count equals the day's live rows in the
table's metadata: a crash between a commit and the index update, a concurrent writer or a
retention drop only makes that day be rebuilt from its event_id column.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from . import lake as lk
from .events import CONFLICTING_DUPLICATE, CONTENT_COLUMNS
from .storage import Root

log = logging.getLogger(__name__)

INDEX_DIR = "event-ids"
CONSOLIDATED = "all.parquet"
HASH_FUNCTION = f"polars-{pl.__version__}-seed0-id-content"
"""What the stored hashes were computed with: an index from another polars version is rebuilt."""
REBUILD_ROWS = 200_000
"""Rows read at a time to rebuild a day's index: memory holds their content columns, not the day's."""
NO_FINGERPRINTS = pl.DataFrame(schema={"h": pl.UInt64(), "c": pl.UInt64()})


def fingerprints(events: pl.DataFrame) -> pl.DataFrame:
    """``h``, the hash of each event's event_id, and ``c``, of its content: what the index keeps."""
    return events.select(h=pl.col("event_id").hash(seed=0), c=content_hash())


def content_hash() -> pl.Expr:
    """A fingerprint of what makes two deliveries of an event_id the same event (stable within a run)."""
    return pl.struct(CONTENT_COLUMNS).hash()


def dedupe(valid: pl.DataFrame, known: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Split valid rows (in arrival order) into new events, conflicting duplicates and a duplicate count.

    ``known`` holds the ``event_id`` and ``content`` hash of matching events already in the lake.
    """
    rows = valid.with_columns(_hash=content_hash(), _first=pl.col("event_id").is_first_distinct())
    batch_ref = rows.filter("_first").select("event_id", _batch_ref="_hash")
    lake_ref = known.select("event_id", _lake_ref="content")
    rows = rows.join(lake_ref, on="event_id", how="left", maintain_order="left").join(
        batch_ref, on="event_id", how="left", maintain_order="left"
    )
    in_lake = pl.col("_lake_ref").is_not_null()
    same = (
        pl.when(in_lake).then(pl.col("_hash") == pl.col("_lake_ref")).otherwise(pl.col("_hash") == pl.col("_batch_ref"))
    )
    new = ~in_lake & pl.col("_first")
    rows = rows.with_columns(_new=new, _dup=~new & same)
    accepted = rows.filter("_new")
    conflicts = rows.filter(~pl.col("_new") & ~pl.col("_dup")).with_columns(
        reason=pl.lit(CONFLICTING_DUPLICATE),
        detail=pl.format(
            "event_id '{}' was already {} with different content",
            pl.col("event_id"),
            pl.when(in_lake).then(pl.lit("in the lake")).otherwise(pl.lit("earlier in the batch")),
        ),
    )
    helpers = ["_hash", "_first", "_lake_ref", "_batch_ref", "_new", "_dup"]
    return accepted.drop(helpers), conflicts.drop(helpers), int(rows["_dup"].sum())


@dataclass
class DayIndex:
    rows: int
    fingerprints: pl.DataFrame  # h, c: see ``fingerprints``


@dataclass
class EventIndex:
    """The event-id hash index of one lake, kept in memory for a run."""

    lake: Root
    days: dict[date, DayIndex] = field(default_factory=dict)
    consolidated: dict[date, DayIndex] | None = None

    def path(self, day: date | None = None) -> str:
        name = CONSOLIDATED if day is None else f"event_date={day.isoformat()}.parquet"
        return self.lake.join(lk.STATE, INDEX_DIR, name)

    def refresh(self, table: Any) -> None:
        """Make the index match ``table``'s version: load or rebuild the days whose row count differs."""
        counts = lk.date_row_counts(table)
        if self.consolidated is None:
            self.consolidated = _read(self.lake, self.path())
        for day in set(self.days) - set(counts):
            del self.days[day]
        for day, rows in sorted(counts.items()):
            if day in self.days and self.days[day].rows == rows:
                continue
            found = self.consolidated.get(day)
            if found is None or found.rows != rows:  # changed since consolidation: its own file, if current
                found = _read(self.lake, self.path(day)).get(day)
            if found is not None and found.rows == rows:
                self.days[day] = found
                continue
            files = lk.files_in(table, [("event_date", "=", day.isoformat())])
            parts = [
                fingerprints(lk.read_files(self.lake, group, lk.EVENT_COLUMNS, CONTENT_COLUMNS))
                for group in lk.in_groups(files, REBUILD_ROWS)
            ]
            self.days[day] = DayIndex(rows, pl.concat([NO_FINGERPRINTS, *parts]))
            log.info("rebuilt the event-id index of %s (%d events)", day, rows)
            self._save_day(day)

    def matching(self, table: Any, valid: pl.DataFrame) -> pl.DataFrame:
        """``event_id`` and ``content`` hash of the table's events among ``valid``'s event_ids.

        An event_id whose hash and content hash are both in the index is a re-delivery, known from
        the index alone. One whose hash is there with other content is looked up in the table
        (event_id column only, in the days of its hash), so a hash collision is never a conflict.
        """
        batch = fingerprints(valid).with_columns(valid["event_id"]).unique()
        wanted = batch.select("h").unique()
        hits = {day: index.fingerprints.join(wanted, on="h", how="semi") for day, index in self.days.items()}
        hits = {day: found for day, found in hits.items() if found.height}
        if not hits:
            return pl.DataFrame(schema={"event_id": pl.String(), "content": pl.UInt64()})
        entries = pl.concat([found.with_columns(event_date=pl.lit(day, pl.Date)) for day, found in hits.items()])
        same = batch.join(entries, on=["h", "c"], how="semi").select("event_id", content="c").unique("event_id")
        others = batch.join(entries.select("h", "event_date", content="c"), on="h").filter(
            ~pl.col("event_id").is_in(same["event_id"].implode())
        )
        if others.height:
            days = others["event_date"].unique().to_list()
            present = lk.read_dates(self.lake, table, days, ["event_id"], event_ids=others["event_id"])["event_id"]
            others = others.filter(pl.col("event_id").is_in(present.implode()))
        return pl.concat([same, others.select("event_id", "content").unique("event_id")])

    def add(self, accepted: pl.DataFrame) -> None:
        """Count rows a commit just added (lake-shaped, with event_date) and store the days they touched."""
        for (day,), part in accepted.partition_by("event_date", as_dict=True).items():
            current = self.days.get(day, DayIndex(0, NO_FINGERPRINTS))
            self.days[day] = DayIndex(current.rows + part.height, pl.concat([current.fingerprints, fingerprints(part)]))
            self._save_day(day)

    def consolidate(self, table: Any) -> int:
        """Write every day into the consolidated file and remove the per-day files; the days written."""
        self.refresh(table)
        _write(self.lake, self.path(), self.days)
        for path in self.lake.find(self.lake.join(lk.STATE, INDEX_DIR), (".parquet",)):
            if path.rsplit("/", 1)[-1].startswith("event_date="):
                self.lake.remove(path)
        self.consolidated = dict(self.days)
        return len(self.days)

    def _save_day(self, day: date) -> None:
        _write(self.lake, self.path(day), {day: self.days[day]})


def _read(lake: Root, path: str) -> dict[date, DayIndex]:
    """The days an index file holds (none if it is missing or was hashed by another polars version)."""
    try:
        data = lake.read_bytes(path)
    except FileNotFoundError:  # never written, or removed meanwhile by a compaction's consolidation
        return {}
    table = pq.read_table(io.BytesIO(data))
    meta = table.schema.metadata or {}
    if meta.get(b"hash") != HASH_FUNCTION.encode():
        return {}
    rows = json.loads(meta.get(b"rows", b"{}"))
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    out = {}
    for (day,), part in frame.partition_by("event_date", as_dict=True).items():
        out[day] = DayIndex(int(rows.get(day.isoformat(), -1)), part.select("h", "c"))
    return out


def _write(lake: Root, path: str, days: dict[date, DayIndex]) -> None:
    frame = (
        pl.concat(
            [i.fingerprints.select(pl.lit(d, pl.Date).alias("event_date"), "h", "c") for d, i in sorted(days.items())]
        )
        if days
        else pl.DataFrame(schema={"event_date": pl.Date(), "h": pl.UInt64(), "c": pl.UInt64()})
    )
    table = frame.to_arrow().replace_schema_metadata(
        {"rows": json.dumps({d.isoformat(): i.rows for d, i in days.items()}), "hash": HASH_FUNCTION}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    lake.write_bytes(path, buffer.getvalue())
