"""Ingest: raw JSON Lines -> validated, deduplicated events in the lake's Delta tables, plus the quarantine.

Work goes in batches of at most ``batch_bytes`` of decompressed input; a big file is read in
chunks and may span several batches. A batch ends with two commits: its new events (one
atomic append to the events table, on exactly the version it deduplicated against), then its
quarantine records, whose commit also records which raw lines the batch consumed (the
ledger). A run killed anywhere leaves at most unreferenced files and an events commit whose
lines the next run reads again and counts as duplicates: nothing is lost or doubled, and no run
ever waits for a lease. Concurrent runs are safe: every commit is optimistic and re-checked.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from . import lake as lk
from . import ledger as ledgers
from . import quarantine, raw
from .config import DEFAULT_BATCH_MB
from .dedupe import FINGERPRINT_COLUMNS, EventIndex, dedupe, with_fingerprints
from .events import REASONS, UTC_DATETIME, Window, normalize, route
from .inputs import BadInput
from .memory import fewer_malloc_arenas, release_memory
from .storage import Root, error_line, object_gone, refused_object
from .validation import ValidationFailed, ValidationReport, validate_batch, warm_up

log = logging.getLogger(__name__)

DEFAULT_BATCH_BYTES = DEFAULT_BATCH_MB << 20
COMMIT_ATTEMPTS = 8
CHUNK_BYTES = 8 << 20
"""Raw bytes parsed at a time: a 1.68 GB file's peak was 1,125 MiB with 32 MB chunks, 888 with 8 MB."""


class ConcurrentIngest(RuntimeError):
    """Another ingest committed lines of the same raw files first: this run stops, nothing is lost."""


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
    skipped: dict[str, int] = field(default_factory=dict)
    max_event_time: str | None = None
    lag_seconds: float | None = None
    events_version: int | None = None
    stopped: str | None = None
    failed: dict[str, str] = field(default_factory=dict)
    """Raw files the store refused to give (path to reason): left for the next run."""

    def add(self, reasons: Counter[str]) -> None:
        for reason, count in reasons.items():
            self.quarantined[reason] = self.quarantined.get(reason, 0) + count

    def as_dict(self) -> dict:
        out = asdict(self)
        out["quarantined"] = {r: self.quarantined[r] for r in REASONS if r in self.quarantined} | {
            r: n for r, n in self.quarantined.items() if r not in REASONS
        }
        out["quarantined_total"] = sum(self.quarantined.values())
        return out


# --- batches of chunks ------------------------------------------------------------------------


@dataclass
class Batch:
    """Chunks of raw files that are committed together."""

    chunks: list[raw.Chunk] = field(default_factory=list)
    files: dict[str, raw.RawFile] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)  # path -> line the batch resumed after
    nbytes: int = 0
    line_count: int = 0

    def add(self, file: raw.RawFile, start: int, chunk: raw.Chunk) -> None:
        self.chunks.append(chunk)
        self.files[file.path] = file
        self.starts.setdefault(file.path, start)
        self.nbytes += chunk.nbytes
        self.line_count += chunk.rows.height + chunk.rejected["line_number"].count()

    def consumed(self) -> dict[str, list[Any]]:
        """path -> [signature, last line covered, reached the end]: the ledger entry of this batch."""
        last: dict[str, raw.Chunk] = {}
        for chunk in self.chunks:
            last[chunk.source] = chunk
        return {p: [self.files[p].signature, c.last_line, c.done] for p, c in last.items()}

    def lines(self) -> int:
        """Non-blank lines read: parsed rows plus lines the parser rejected."""
        return self.line_count


def plan_batches(
    root: Root,
    pending: list[tuple[raw.RawFile, int]],
    batch_bytes: int,
    limits: raw.Limits,
    unread: dict[str, str],
) -> Iterator[Batch]:
    """Read the pending files in chunks and group them, in order, into batches of about ``batch_bytes``
    (a batch closes when half another chunk would take it past ``batch_bytes``).

    Chunks of at most CHUNK_BYTES: parsing a chunk holds a few copies of it while the previous batch
    commits, so a big file's peak grows with the chunk, not only with the batch.

    A file the store refuses to give (``storage.refused_object``: denied, archived) is left for the
    next run and named in ``unread`` with the reason; the lines read before it stay in the batch.
    It is not content, so it is not quarantined; and one such object never stops the others. A file
    gone since it was listed (renamed, expired) is passed over with a warning: nothing is left to
    read, and if it comes back, a later run finds it. Any other storage failure (the store
    unreachable) stops the run, which is retried.
    """
    chunk_bytes = max(min(batch_bytes, CHUNK_BYTES), 1 << 16)
    batch = Batch()
    for file, start in pending:
        try:
            for chunk in raw.read_chunks(root, file, chunk_bytes=chunk_bytes, after_line=start, limits=limits):
                batch.add(file, start, chunk)
                if batch.nbytes + chunk_bytes // 2 > batch_bytes:
                    yield batch
                    batch = Batch()
                    start = chunk.last_line
        except Exception as exc:
            if not refused_object(exc):
                raise
            if object_gone(exc):
                log.warning("raw file %s is gone since it was listed; passed over", file.path)
                continue
            unread[file.path] = error_line(exc)
            log.error("raw file %s was not read (the next run tries again): %s", file.path, unread[file.path])
    if batch.chunks:
        yield batch


def read_ahead(batches: Iterator[Batch]) -> Iterator[Batch]:
    """``batches``, with the next one read and parsed in a thread while the caller commits the current one.

    Reading (pyarrow, zlib and object-store calls release the GIL) overlaps validation and commits.
    The reader starts a batch only once the caller has taken the previous one, so memory holds at
    most two batches: the one being committed and the next. An error while reading is raised here,
    in order.
    """
    slot: queue.Queue[tuple[Batch | None, BaseException | None]] = queue.Queue(maxsize=1)
    taken = threading.Semaphore(1)  # released when the caller takes a batch: room for the next one
    stop = threading.Event()

    def produce() -> None:
        try:
            while True:
                while not taken.acquire(timeout=0.2):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                batch = next(batches, None)
                slot.put((batch, None))
                if batch is None:
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            slot.put((None, exc))

    reader = threading.Thread(target=produce, name="raw-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            batch, error = slot.get()
            if error is not None:
                raise error
            if batch is None:
                return
            taken.release()
            held = [batch]
            del batch
            yield held.pop()  # no reference left here while the caller commits it and frees it
    finally:
        stop.set()
        while reader.is_alive():  # unblock a producer waiting to hand over its batch
            with contextlib.suppress(queue.Empty):
                slot.get(timeout=0.2)


def parsed_rows(batch: Batch) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The batch's parsed rows and the records its parser rejected, taken out of its chunks (one copy
    in memory, not two; the chunks keep their raw lines for the quarantine)."""
    rows = [c.rows for c in batch.chunks if c.rows.height]
    rejected = [c.rejected for c in batch.chunks if c.rejected.height]
    for chunk in batch.chunks:
        chunk.rows = chunk.rows.clear()
    return (
        pl.concat(rows) if rows else pl.DataFrame(schema=raw.PARSED_SCHEMA),
        pl.concat(rejected)
        if rejected
        else pl.DataFrame(schema={c: quarantine.SCHEMA[c] for c in quarantine.RECORD_COLUMNS}),
    )


def with_raw(batch: Batch, rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (with source_file and line_number) plus their original line text, for the quarantine."""
    if rows.is_empty():
        return rows.with_columns(raw=pl.lit(None, pl.String))
    parts = []
    for chunk in batch.chunks:
        mine = rows.filter(
            (pl.col("source_file") == chunk.source)
            & pl.col("line_number").is_between(chunk.first_line, chunk.last_line)
        )
        if mine.height:
            parts.append(
                mine.with_columns(raw=pl.Series(chunk.raw_lines(mine["line_number"].to_list()), dtype=pl.String))
            )
    return pl.concat(parts)


# --- one batch ----------------------------------------------------------------------------------


@dataclass
class Run:
    """What a run keeps between batches."""

    lake: Root
    window: Window
    now: datetime
    validate: bool
    index: EventIndex
    ledger: ledgers.Ledger
    summary: IngestSummary


def commit_events(
    run: Run, shaped: pl.DataFrame, batch_id: str, metadata: dict[str, str]
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Deduplicate against the latest table version, validate, and append the new events on exactly
    that version.

    Great Expectations checks the batch in its worker while this process encodes and writes the
    batch's files: they stay invisible until the commit, which waits for the verdict (a failed
    batch leaves unreferenced files, as a crash would, for vacuum).
    """
    validated = not run.validate
    shaped = with_fingerprints(shaped)
    for _ in range(COMMIT_ATTEMPTS):
        table = lk.open_events(run.lake)
        run.index.refresh(table)
        accepted, conflicts, duplicates = dedupe(shaped, run.index.matching(table, shaped))
        accepted = accepted.with_columns(
            ingested_at=pl.lit(run.now, UTC_DATETIME), event_date=pl.col("event_time").dt.date()
        )
        if accepted.is_empty():
            return accepted.drop(FINGERPRINT_COLUMNS), conflicts, duplicates
        with ThreadPoolExecutor(1, thread_name_prefix="validation") as pool:
            # a retry only removes rows, so one validation covers it
            verdict = None if validated else pool.submit(validate_batch, run.lake, accepted, run.window, batch_id)
            actions = lk.write_event_files(run.lake, accepted)
            if verdict is not None:
                _require_success(run, verdict.result(), batch_id)
                validated = True
        try:
            version = lk.commit_event_files(table, actions, metadata)
        except lk.CommitConflict as exc:
            log.info("batch %s: %s; deduplicating again", batch_id, exc)
            continue
        run.summary.events_version = version
        run.index.add(accepted, version)
        return accepted.drop(FINGERPRINT_COLUMNS), conflicts, duplicates
    raise lk.CommitConflict(
        f"batch {batch_id}: the events table kept changing; gave up after "
        f"{COMMIT_ATTEMPTS} attempts (the next run redoes it)"
    )


def _require_success(run: Run, report: ValidationReport, batch_id: str) -> None:
    """List the batch's validation report in the summary; ValidationFailed if the suite failed."""
    run.summary.validation_reports.append(run.lake.display(report.html_path))
    if not report.success:
        raise ValidationFailed(
            f"batch {batch_id} failed the Great Expectations suite: "
            + "; ".join(report.failures)
            + f" (report: {run.lake.display(report.json_path)})"
        )


def _commit_quarantine(run: Run, batch: Batch, records: pl.DataFrame, batch_id: str, metadata: dict[str, str]) -> None:
    """The batch's commit point: its quarantine records and the raw lines it consumed, in one commit."""
    for _ in range(COMMIT_ATTEMPTS):
        table = quarantine.open_table(run.lake)
        run.ledger.catch_up(table)
        taken = [p for p, start in batch.starts.items() if run.ledger.start_line(batch.files[p]) != start]
        if taken:
            raise ConcurrentIngest(
                f"another ingest committed lines of {taken[0]} first; this run stops and "
                "leaves the rest to it (its events were counted as duplicates)"
            )
        try:
            version = quarantine.commit(table, records, run.now, metadata)
        except lk.CommitConflict:
            continue
        run.ledger.record(version, batch_id, batch.consumed())
        return
    raise lk.CommitConflict(
        f"batch {batch_id}: the quarantine table kept changing; gave up after "
        f"{COMMIT_ATTEMPTS} attempts (the next run redoes it)"
    )


def ingest_batch(run: Run, batch: Batch) -> None:
    """Route, deduplicate, validate and commit one batch."""
    batch_id = lk.new_batch_id(run.now)
    rows, rejected = parsed_rows(batch)
    routed = route(rows, run.window)
    del rows
    invalid = with_raw(batch, routed.filter(pl.col("reason").is_not_null()))
    valid = routed.filter(pl.col("reason").is_null())
    del routed
    shaped = normalize(valid).with_columns(valid.select("source_file", "line_number"))
    del valid  # each step's input is freed as soon as the next exists: a batch is ~10x its raw size at peak
    consumed = batch.consumed()
    base = dict(batch_id=batch_id, files=consumed, ingest_time=run.now.isoformat())
    accepted, conflicts, duplicates = commit_events(
        run, shaped, batch_id, lk.commit_metadata(**base, lines=batch.lines())
    )
    bad = pl.concat(
        [
            quarantine.records(rejected, run.now, batch_id),
            quarantine.records(invalid, run.now, batch_id),
            quarantine.records(with_raw(batch, conflicts), run.now, batch_id),
        ]
    )
    reasons = Counter(bad["reason"].to_list())
    committed_at = datetime.now(UTC)
    arrived = [f.modified for f in batch.files.values() if f.modified is not None]
    lag = max((committed_at - t).total_seconds() for t in arrived) if arrived else None
    _commit_quarantine(
        run,
        batch,
        bad,
        batch_id,
        lk.commit_metadata(
            **base,
            lines=batch.lines(),
            ingested=accepted.height,
            duplicates=duplicates,
            quarantined=dict(reasons),
            lag_seconds=lag,
        ),
    )

    summary = run.summary
    summary.files += sum(1 for p in consumed if batch.starts[p] == 0)
    summary.lines += batch.lines()
    summary.ingested += accepted.height
    summary.duplicates += duplicates
    summary.add(reasons)
    summary.batches.append(batch_id)
    if accepted.height:
        latest = accepted["event_time"].max()
        text = latest.astimezone(UTC).isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]
        summary.max_event_time = max(summary.max_event_time or text, text)
    if lag is not None:
        summary.lag_seconds = max(summary.lag_seconds or 0.0, round(lag, 3))
    log.info(
        "batch %s: %d files, %d lines, %d ingested, %d duplicates, %d quarantined",
        batch_id,
        len(consumed),
        batch.lines(),
        accepted.height,
        duplicates,
        bad.height,
    )


# --- the run ----------------------------------------------------------------------------------


def ingest(
    raw_url: str,
    lake_url: str,
    now: datetime | None = None,
    retention_days: int = 90,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    validate: bool = True,
    limits: raw.Limits | None = None,
) -> IngestSummary:
    """Load every raw line not yet committed into the lake; safe to rerun, to kill, and to run concurrently."""
    fewer_malloc_arenas()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    raw_root, lake = Root.open(raw_url), Root.open(lake_url)
    try:
        limits = limits or raw.Limits.from_env()
    except ValueError as exc:  # an AUDIT_MAX_* variable that is not a positive whole number
        raise BadInput(str(exc)) from None
    summary = IngestSummary()
    found = raw.discover(raw_root)
    summary.skipped = dict(found.skipped)
    quarantine_table = quarantine.open_table(lake)
    ledger = ledgers.load(lake, quarantine_table)
    pending = ledger.pending(found.files)
    summary.skipped_files = len(found.files) - len(pending)
    if not pending:
        return summary
    if validate:
        warm_up()
    window = Window(now=now, retention_days=retention_days, field_bytes=limits.field_bytes)
    run = Run(lake, window, now, validate, EventIndex(lake), ledger, summary)
    try:
        for batch in read_ahead(plan_batches(raw_root, pending, batch_bytes, limits, summary.failed)):
            ingest_batch(run, batch)
            del batch
            release_memory()
    except ConcurrentIngest as exc:
        log.warning("%s", exc)
        summary.stopped = str(exc)
    finally:
        ledgers.save(lake, ledger, [f.path for f in found.files])
    return summary


def freshness(raw_url: str, lake_url: str, now: datetime | None = None) -> dict[str, Any]:
    """How current the lake is: the last batch's commit time and lag, and the oldest raw file not yet ingested."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    lake = Root.open(lake_url)
    table = quarantine.table(lake).open()
    out: dict[str, Any] = {
        "last_commit": None,
        "last_lag_seconds": None,
        "oldest_unprocessed": None,
        "pending_files": 0,
    }
    if table is not None:
        for commit in table.history(limit=20):
            meta = lk.read_commit_metadata(commit)
            if "files" in meta:
                committed = datetime.fromtimestamp(commit["timestamp"] / 1000, UTC)
                out["last_commit"] = committed.isoformat().replace("+00:00", "Z")
                out["last_lag_seconds"] = meta.get("lag_seconds")
                break
    ledger = ledgers.load(lake, table) if table is not None else ledgers.Ledger()
    pending = ledger.pending(raw.discover(Root.open(raw_url)).files)
    out["pending_files"] = len(pending)
    dated = [f for f, _ in pending if f.modified is not None]
    if dated:
        oldest = min(dated, key=lambda f: f.modified)  # type: ignore[arg-type,return-value]
        assert oldest.modified is not None
        out["oldest_unprocessed"] = {
            "path": oldest.path,
            "modified": oldest.modified.isoformat().replace("+00:00", "Z"),
            "age_seconds": round((now - oldest.modified).total_seconds(), 3),
        }
    return out
