"""Ingest: raw JSON Lines -> validated, deduplicated, date-partitioned Parquet, plus the quarantine.

Work goes in batches of whole raw files (bounded by ``batch_bytes``), each committed by a
ledger entry written last. A rerun skips committed files; a batch that crashed half-way is
redone from its raw files, and the lake-wide event_id check turns whatever it had already
written into counted duplicates, so nothing is lost or doubled.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Callable, Iterator

import polars as pl

from . import datadocs, quarantine, raw
from . import lake as lk
from .events import CONFLICTING_DUPLICATE, CONTENT_COLUMNS, REASONS, UTC_DATETIME, Window, normalize, route
from .storage import Root
from .validation import ValidationFailed, validate_batch, warm_up

log = logging.getLogger(__name__)

DEFAULT_BATCH_BYTES = 16 * 1024 * 1024


@dataclass
class IngestSummary:
    """What an ingest run did; printed as JSON by the CLI and returned by the Airflow task."""

    files: int = 0
    lines: int = 0
    ingested: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    batches: list[str] = field(default_factory=list)
    validation_reports: list[str] = field(default_factory=list)
    skipped_files: int = 0

    def add(self, reasons: Counter[str]) -> None:
        for reason, count in reasons.items():
            self.quarantined[reason] = self.quarantined.get(reason, 0) + count

    def as_dict(self) -> dict:
        out = asdict(self)
        out["quarantined"] = {r: self.quarantined[r] for r in REASONS if r in self.quarantined}
        out["quarantined_total"] = sum(self.quarantined.values())
        return out


# --- pure steps -------------------------------------------------------------------------------

def plan_batches(files: list[raw.RawFile], batch_bytes: int) -> Iterator[list[raw.RawFile]]:
    """Group files, in order, into batches of at most ``batch_bytes`` (a bigger file goes alone)."""
    batch: list[raw.RawFile] = []
    size = 0
    for f in files:
        if batch and size + f.size > batch_bytes:
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += f.size
    if batch:
        yield batch


def content_hash() -> pl.Expr:
    """A fingerprint of what makes two deliveries of an event_id the same event (stable within a run)."""
    return pl.struct(CONTENT_COLUMNS).hash()


def dedupe(valid: pl.DataFrame, known: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Split valid rows (in arrival order) into new events, conflicting duplicates and a duplicate count.

    ``known`` holds the ``event_id`` and ``content`` hash of matching events already in the lake.
    The first version of an event_id wins: the lake's, else the earliest in the batch. A later
    copy with the same content is a duplicate (counted, kept once); with other content, a conflict.
    """
    rows = valid.with_columns(_hash=content_hash(), _first=pl.col("event_id").is_first_distinct())
    batch_ref = rows.filter("_first").select("event_id", _batch_ref="_hash")
    lake_ref = known.select("event_id", _lake_ref="content")
    rows = rows.join(lake_ref, on="event_id", how="left", maintain_order="left").join(
        batch_ref, on="event_id", how="left", maintain_order="left")
    in_lake = pl.col("_lake_ref").is_not_null()
    same = pl.when(in_lake).then(pl.col("_hash") == pl.col("_lake_ref")).otherwise(
        pl.col("_hash") == pl.col("_batch_ref"))
    new = ~in_lake & pl.col("_first")
    rows = rows.with_columns(_new=new, _dup=~new & same)
    accepted = rows.filter("_new")
    conflicts = rows.filter(~pl.col("_new") & ~pl.col("_dup")).with_columns(
        reason=pl.lit(CONFLICTING_DUPLICATE),
        detail=pl.format("event_id '{}' was already {} with different content", pl.col("event_id"),
                         pl.when(in_lake).then(pl.lit("in the lake")).otherwise(pl.lit("earlier in the batch"))),
    )
    helpers = ["_hash", "_first", "_lake_ref", "_batch_ref", "_new", "_dup"]
    return accepted.drop(helpers), conflicts.drop(helpers), int(rows["_dup"].sum())


@dataclass
class KnownEvents:
    """Where to look for event_ids already in the lake, for the uniqueness check of each batch.

    The files that were in the lake when the run started are searched for every batch. Of what
    the run itself writes, only a 64-bit hash of each event_id stays in memory (8 bytes an
    event); the run's own files are read back only for a batch with an id among those hashes,
    so memory and time follow the batch, not the backlog.
    """

    lake: Root
    files: list[str]
    written_files: list[str] = field(default_factory=list)
    written_ids: list[pl.Series] = field(default_factory=list)

    @classmethod
    def snapshot(cls, lake: Root) -> "KnownEvents":
        return cls(lake, lk.event_files(lake))

    def matching(self, event_ids: pl.Series) -> pl.DataFrame:
        """``event_id`` and ``content`` hash of the lake's events among ``event_ids``."""
        hashes = event_ids.hash()
        seen_in_run = any(hashes.is_in(written.implode()).any() for written in self.written_ids)
        files = self.files + self.written_files if seen_in_run else self.files
        found = lk.lookup_events(self.lake, event_ids, CONTENT_COLUMNS, files)
        return found.select("event_id", content=content_hash())

    def remember(self, accepted: pl.DataFrame, files: list[str]) -> None:
        self.written_ids.append(accepted["event_id"].hash())
        self.written_files.extend(files)


def with_raw(parsed: raw.ParsedLines, rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` plus their original line text, for the quarantine."""
    lines = parsed.raw_lines(rows["source_file"].to_list(), rows["line_number"].to_list())
    return rows.with_columns(raw=pl.Series(lines, dtype=pl.String))


# --- the run ----------------------------------------------------------------------------------

def _recover(lake: Root, committed: set[str]) -> None:
    """Remove quarantine and validation output of batches that never committed (a crash).

    Their raw files are not in the ledger, so this run redoes them; events they wrote stay and
    are recognised as duplicates.
    """
    removed = set()
    for path in lake.find(lake.join(lk.QUARANTINE), (".parquet",)) + lake.find(lake.join(lk.VALIDATION)):
        name = path.rsplit("/", 1)[-1]
        batch_id = name.removeprefix("part-").split(".", 1)[0]
        if batch_id not in committed and not datadocs.is_site_file(name):
            log.warning("removing output of uncommitted batch %s: %s", batch_id, lake.display(path))
            lake.remove(path)
            removed.add(batch_id)
    if removed:
        datadocs.forget(lake, removed)


def _ingest_batch(raw_root: Root, lake: Root, files: list[raw.RawFile], window: Window, now: datetime,
                  summary: IngestSummary, validate: bool, known: KnownEvents,
                  fence: Callable[[], None] = lambda: None) -> None:
    batch_id = lk.new_batch_id(now)
    parsed = raw.parse_files(raw_root, files)
    routed = route(parsed.frame(), window)
    invalid = with_raw(parsed, routed.filter(pl.col("reason").is_not_null()))
    valid = routed.filter(pl.col("reason").is_null())
    shaped = normalize(valid).with_columns(valid.select("source_file", "line_number"))
    accepted, conflicts, duplicates = dedupe(shaped, known.matching(shaped["event_id"].unique()))
    accepted = accepted.with_columns(ingested_at=pl.lit(now, UTC_DATETIME))

    bad = pl.concat([
        quarantine.records(parsed.rejected, now, batch_id),
        quarantine.records(invalid, now, batch_id),
        quarantine.records(with_raw(parsed, conflicts), now, batch_id),
    ])
    if validate and not accepted.is_empty():
        report = validate_batch(lake, accepted, window, batch_id)
        summary.validation_reports.append(lake.display(report.html_path))
        if not report.success:
            raise ValidationFailed(f"batch {batch_id} failed the Great Expectations suite: "
                                   + "; ".join(report.failures) + f" (report: {lake.display(report.json_path)})")
    fence()  # prove the lake lease is still ours before writing (see leases)
    written = lk.write_partitions(lake, accepted, batch_id)
    quarantine.write(lake, bad, batch_id, now)
    known.remember(accepted, written)
    reasons = Counter(bad["reason"].to_list())
    fence()
    lk.commit_batch(lake, batch_id, {
        "batch_id": batch_id,
        "committed_at": now.isoformat(),
        "files": {f.path: f.signature for f in files},
        "lines": parsed.lines,
        "ingested": accepted.height,
        "duplicates": duplicates,
        "quarantined": dict(reasons),
    })
    summary.files += len(files)
    summary.lines += parsed.lines
    summary.ingested += accepted.height
    summary.duplicates += duplicates
    summary.add(reasons)
    summary.batches.append(batch_id)
    log.info("batch %s: %d files, %d lines, %d ingested, %d duplicates, %d quarantined",
             batch_id, len(files), parsed.lines, accepted.height, duplicates, bad.height)


def ingest(raw_url: str, lake_url: str, now: datetime | None = None, retention_days: int = 90,
           batch_bytes: int = DEFAULT_BATCH_BYTES, validate: bool = True) -> IngestSummary:
    """Load every raw file not yet ingested into the lake; safe to rerun and to rerun after a crash."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    raw_root, lake = Root.open(raw_url), Root.open(lake_url)
    window = Window(now=now, retention_days=retention_days)
    summary = IngestSummary()
    with lk.lease(lake) as fence:
        ledger = lk.committed_batches(lake)
        _recover(lake, set(ledger))
        done = {(path, sig) for entry in ledger.values() for path, sig in entry["files"].items()}
        files = raw.discover(raw_root)
        pending = [f for f in files if (f.path, f.signature) not in done]
        summary.skipped_files = len(files) - len(pending)
        if validate and pending:
            warm_up()
        known = KnownEvents.snapshot(lake)
        for batch in plan_batches(pending, batch_bytes):
            _ingest_batch(raw_root, lake, batch, window, now, summary, validate, known, fence)
    return summary
