"""Exactly-once: each event_id enters the lake once, whichever day and batch it comes back in.

The first version of an event_id wins: the lake's, else the earliest in the batch. A later copy
with the same content is a duplicate (counted, kept once); with other content it is a
``conflicting_duplicate``. To find earlier versions without scanning the lake, an index keeps a
64-bit hash of every event_id and of its content per event date (16 bytes an event): a re-delivery
is recognised from the index alone, and only an event_id whose content differs is looked up in
the lake (its event_id column only, for exactness). The index is one consolidated file for all days
(``_state/event-ids/all.parquet``, rewritten by daily maintenance) plus one file per day changed
since (``event_date=D.parquet``), so a run reads a bounded number of objects however many days
the lake holds; each is read, and a touched day rewritten, a row group at a time. A day's entry
is trusted while its row count equals the day's live rows in the table's metadata: a crash
between a commit and the index update, a concurrent writer or a retention drop only makes that
day be rebuilt from its rows. A run keeps the entries of its own commits in memory and writes
each touched day once, at its end (or every ``FLUSH_ENTRIES``), instead of rewriting the day's
file after every batch.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

import polars as pl
import pyarrow.parquet as pq

from . import lake as lk
from .events import CONFLICTING_DUPLICATE, CONTENT_COLUMNS
from .storage import SPOOL_BYTES, Root, pieces

log = logging.getLogger(__name__)
T = TypeVar("T")

INDEX_DIR = "event-ids"
CONSOLIDATED = "all.parquet"
HASH_FUNCTION = f"polars-{pl.__version__}-seed0-id-content"
"""What the stored hashes were computed with: an index from another polars version is rebuilt."""
REBUILD_ROWS = 200_000
"""Rows read at a time to rebuild a day's index: memory holds their content columns, not the day's."""
FLUSH_ENTRIES = 1 << 21
"""Entries a run holds in memory before writing the days they belong to (16 bytes each: 32 MiB).
Each batch rewrote its days' files before: 1.5 s of a 1M-event run, growing with the run's length."""


FINGERPRINT_COLUMNS = ("_h", "_c")
"""A batch's fingerprints, carried beside its rows (:func:`with_fingerprints`) so that the lookup,
the dedupe and the index update hash it once, not three times (1M events: 25.4 s CPU against 28.6)."""


def fingerprints(events: pl.DataFrame) -> pl.DataFrame:
    """``h``, the hash of each event's event_id, and ``c``, of its content: what the index keeps
    (taken from the FINGERPRINT_COLUMNS when ``events`` carries them)."""
    if all(c in events.columns for c in FINGERPRINT_COLUMNS):
        return events.select(h=FINGERPRINT_COLUMNS[0], c=FINGERPRINT_COLUMNS[1])
    return events.select(h=pl.col("event_id").hash(seed=0), c=content_hash())


def with_fingerprints(events: pl.DataFrame) -> pl.DataFrame:
    """``events`` with their fingerprints as FINGERPRINT_COLUMNS, which every step after keeps."""
    return events.with_columns(fingerprints(events).rename(dict(zip("hc", FINGERPRINT_COLUMNS, strict=True))))


def content_hash() -> pl.Expr:
    """A fingerprint of what makes two deliveries of an event_id the same event (stable within a run)."""
    return pl.struct(CONTENT_COLUMNS).hash()


def dedupe(valid: pl.DataFrame, known: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Split valid rows (in arrival order) into new events, conflicting duplicates and a duplicate count.

    ``known`` holds the ``event_id`` and ``content`` hash of matching events already in the lake.
    """
    rows = valid.with_columns(_hash=fingerprints(valid)["c"], _first=pl.col("event_id").is_first_distinct())
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
class EventIndex:
    """The event-id index of one lake, as a run uses it: per day, its row count and the index file
    that holds its fingerprints (None: none yet), plus the fingerprints this run committed and has not
    written yet. Stored fingerprints stay on storage and are streamed a row group at a time, so a run's
    memory does not grow with the lake (a 5M-event lake's index is 80 MB)."""

    lake: Root
    days: dict[date, tuple[int, str | None]] = field(default_factory=dict)
    consolidated: dict[date, int] | None = None  # rows per day in the consolidated file
    unwritten: dict[date, list[pl.DataFrame]] = field(default_factory=dict)

    def path(self, day: date | None = None) -> str:
        name = CONSOLIDATED if day is None else f"event_date={day.isoformat()}.parquet"
        return self.lake.join(lk.STATE, INDEX_DIR, name)

    def refresh(self, table: Any) -> None:
        """Make the index match ``table``'s version: find or rebuild the days whose row count differs."""
        counts = lk.date_row_counts(table)
        if self.consolidated is None:
            self.consolidated = _day_rows(self.lake, self.path())
        for day in set(self.days) - set(counts):
            self._forget(day)
        for day, rows in sorted(counts.items()):
            if day in self.days and self.days[day][0] == rows:
                continue
            self.unwritten.pop(day, None)  # the day is found or rebuilt whole, this run's commits included
            if self.consolidated.get(day) == rows:
                self.days[day] = (rows, self.path())
            elif _day_rows(self.lake, self.path(day)).get(day) == rows:  # changed since consolidation
                self.days[day] = (rows, self.path(day))
            else:
                filters = [("event_date", "=", day.isoformat())]
                groups = lk.read_table_in_groups(
                    self.lake, table, lk.EVENT_COLUMNS, filters, CONTENT_COLUMNS, REBUILD_ROWS
                )
                self._store(day, rows, (fingerprints(group) for group in groups))
                log.info("rebuilt the event-id index of %s (%d events)", day, rows)

    def matching(self, table: Any, valid: pl.DataFrame) -> pl.DataFrame:
        """``event_id`` and ``content`` hash of the table's events among ``valid``'s event_ids.

        An event_id whose hash and content hash are both in the index is a re-delivery, known from
        the index alone. One whose hash is there with other content is looked up in the table
        (event_id column only, in the days of its hash), so a hash collision is never a conflict.
        """
        batch = fingerprints(valid).with_columns(valid["event_id"]).unique()
        entries = self._entries(table, batch.select("h").unique())
        if entries.is_empty():
            return pl.DataFrame(schema={"event_id": pl.String(), "content": pl.UInt64()})
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
        """Count rows a commit just added (lake-shaped, with event_date) and keep their fingerprints
        until :meth:`flush` (called here once FLUSH_ENTRIES are held)."""
        for (day,), part in accepted.partition_by("event_date", as_dict=True).items():
            rows, path = self.days.get(day, (0, None))
            self.days[day] = (rows + part.height, path)
            self.unwritten.setdefault(day, []).append(fingerprints(part))
        if sum(f.height for frames in self.unwritten.values() for f in frames) >= FLUSH_ENTRIES:
            self.flush()

    def flush(self) -> None:
        """Write each day this run added to: its stored entries plus the new ones, as the day's file
        (copied a row group at a time, into a spool uploaded after). The index is a cache of the
        table: a day left unwritten (a crash, a storage error) is rebuilt by the next run that needs it."""
        for day in sorted(self.unwritten):
            rows, path = self.days[day]
            held = sum(frame.height for frame in self.unwritten[day])
            # the file must still hold what this run found in it: one rewritten meanwhile by an older
            # view of the day (a slow rebuild landing late) would lose events under this run's count
            stored = _day_groups(self.lake, path, {day}, expected={day: rows - held}) if path else iter(())
            try:
                self._store(day, rows, itertools.chain(stored, self.unwritten.pop(day)))
            except FileNotFoundError:  # consolidated meanwhile: the next refresh finds or rebuilds the day
                self._forget(day)
                self.consolidated = None

    def consolidate(self, table: Any) -> int:
        """Write every day into the consolidated file, a day at a time, and remove the per-day files;
        the days written."""

        def write() -> list[date]:
            days = sorted(self.days)
            found = [(day, *self.days[day]) for day in days]
            sources = (
                (day, rows, _day_groups(self.lake, path, {day}, expected={day: rows})) for day, rows, path in found
            )
            _write_days(self.lake, self.path(), sources)
            return days

        self.flush()
        self.refresh(table)
        days = self._again_if_moved(table, write)
        for path in self.lake.find(self.lake.join(lk.STATE, INDEX_DIR), (".parquet",)):
            if path.rsplit("/", 1)[-1].startswith("event_date="):
                self.lake.remove(path)
        self.consolidated = {day: self.days[day][0] for day in days}
        self.days = {day: (rows, self.path()) for day, rows in self.consolidated.items()}
        return len(days)

    def _entries(self, table: Any, wanted: pl.DataFrame) -> pl.DataFrame:
        """Index entries (event_date, h, c) whose ``h`` is among ``wanted``'s, streamed file by file,
        and those this run has not written yet."""

        def read() -> pl.DataFrame:
            by_file: dict[str, dict[date, int]] = {}
            for day, (rows, path) in self.days.items():
                if path is not None:  # the rows the file must hold for the day: its count less the held ones
                    by_file.setdefault(path, {})[day] = rows - sum(f.height for f in self.unwritten.get(day, ()))
            held = [
                frame.join(wanted, on="h", how="semi").select(pl.lit(day, pl.Date).alias("event_date"), "h", "c")
                for day, frames in self.unwritten.items()
                for frame in frames
            ]
            return pl.concat(
                [
                    _NO_ENTRIES,
                    *(_read_days(self.lake, p, set(days), wanted, days) for p, days in by_file.items()),
                    *held,
                ]
            )

        return self._again_if_moved(table, read)

    def _again_if_moved(self, table: Any, step: Callable[[], T]) -> T:
        """Run ``step`` on the index as found; if an index file it reads was removed meanwhile (another
        process consolidated), find the index again and rerun it."""
        for _ in range(3):
            try:
                return step()
            except FileNotFoundError:  # IndexMoved included: a file that no longer holds what was found in it
                self.days, self.consolidated, self.unwritten = {}, None, {}
                self.refresh(table)
        raise RuntimeError("the event-id index kept being rewritten while this run read it; the next run retries")

    def _forget(self, day: date) -> None:
        self.days.pop(day, None)
        self.unwritten.pop(day, None)

    def _store(self, day: date, rows: int, day_fingerprints: Iterable[pl.DataFrame]) -> None:
        _write_days(self.lake, self.path(day), [(day, rows, day_fingerprints)])
        self.days[day] = (rows, self.path(day))


_NO_ENTRIES = pl.DataFrame(schema={"event_date": pl.Date(), "h": pl.UInt64(), "c": pl.UInt64()})
INDEX_ROW_GROUP = 1 << 18
"""Entries per row group of an index file (6 MiB): what reading an index holds at once."""


class IndexMoved(FileNotFoundError):
    """An index file no longer holds the rows per day this run found in it: another process rewrote it
    (a consolidation, or a rebuild from an older table version landing late). Handled as a removed file."""


def _claims(reader: pq.ParquetFile) -> dict[date, int]:
    """The days an open index file holds and their rows, from its footer (none if hashed otherwise)."""
    meta = reader.metadata.metadata or {}
    if meta.get(b"hash") != HASH_FUNCTION.encode():
        return {}
    return {date.fromisoformat(d): int(n) for d, n in json.loads(meta.get(b"rows", b"{}")).items()}


def _day_rows(lake: Root, path: str) -> dict[date, int]:
    """The days an index file holds and their rows, from its footer (none if it is missing or was
    hashed by another polars version)."""
    try:
        with lake.open_input(path) as f:
            return _claims(pq.ParquetFile(f))
    except FileNotFoundError:  # never written, or removed meanwhile by a compaction's consolidation
        return {}


def _read_days(
    lake: Root,
    path: str,
    days: set[date],
    wanted: pl.DataFrame | None = None,
    expected: dict[date, int] | None = None,
) -> pl.DataFrame:
    """Entries (event_date, h, c) of ``days`` in one index file, only those whose ``h`` is in
    ``wanted`` if given; one row group in memory at a time. IndexMoved if the file's footer does not
    claim the ``expected`` rows of each day."""
    return pl.concat([_NO_ENTRIES, *_day_groups(lake, path, days, wanted, expected)])


def _day_groups(
    lake: Root,
    path: str,
    days: set[date],
    wanted: pl.DataFrame | None = None,
    expected: dict[date, int] | None = None,
) -> Iterator[pl.DataFrame]:
    """:func:`_read_days` a row group at a time."""
    with lake.open_input(path) as f:
        reader = pq.ParquetFile(f)
        if expected is not None:
            claims = _claims(reader)
            moved = {d: (n, claims.get(d)) for d, n in expected.items() if claims.get(d) != n}
            if moved:
                raise IndexMoved(f"{path} was rewritten meanwhile (rows expected, found: {moved})")
        for i in range(reader.num_row_groups):
            stats = reader.metadata.row_group(i).column(0).statistics
            if stats is not None and stats.has_min_max and not any(stats.min <= d <= stats.max for d in days):
                continue
            group = pl.from_arrow(reader.read_row_group(i))
            assert isinstance(group, pl.DataFrame)
            if wanted is not None:
                group = group.join(wanted, on="h", how="semi")
            yield group.filter(pl.col("event_date").is_in(list(days)))


def _write_days(lake: Root, path: str, days: Iterable[tuple[date, int, Iterable[pl.DataFrame]]]) -> None:
    """Write days' fingerprints (in order; each day's as a stream of frames) and their row counts as
    one index file, in row groups of ``INDEX_ROW_GROUP`` entries. The file is spooled (memory, then
    a temporary file) and streamed to storage: memory holds a row group, not a day."""
    schema = lk.arrow_schema(dict(_NO_ENTRIES.schema))
    rows: dict[str, int] = {}
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        # hashes are random: a dictionary for them is built, overflows and is dropped for every row
        # group (5M entries: 0.87 s against 0.20 s written with one for the date only, and 10% larger)
        with pq.ParquetWriter(spool, schema, compression="zstd", use_dictionary=["event_date"]) as writer:
            for day, count, parts in days:
                rows[day.isoformat()] = count
                for group in _regrouped((p.select("h", "c") for p in parts), INDEX_ROW_GROUP):
                    table = group.select(pl.lit(day, pl.Date).alias("event_date"), "h", "c").to_arrow()
                    writer.write_table(table.cast(schema))
            writer.add_key_value_metadata({"rows": json.dumps(rows), "hash": HASH_FUNCTION})
        spool.seek(0)
        lake.write_chunks(path, pieces(spool))


def _regrouped(frames: Iterable[pl.DataFrame], size: int) -> Iterator[pl.DataFrame]:
    """``frames`` cut and joined into frames of ``size`` rows (the last one smaller): row groups of
    one size, however small or large the pieces that feed them."""
    pending: list[pl.DataFrame] = []
    held = 0
    for frame in frames:
        pending.append(frame)
        held += frame.height
        while held >= size:
            joined = pl.concat(pending)
            yield joined.head(size)
            pending, held = [joined.slice(size)], held - size
    if held:
        yield pl.concat(pending)
