"""Quarantine replay: re-run quarantined lines through today's rules, once.

A line quarantined as ``future_timestamp`` because a producer's clock ran ahead, or as
``unknown_action`` before the catalog learned the action, is fine later. ``replay`` parses the
stored lines again with the same parser, routes them with the current rules at ``now``, and sends
those that pass through the normal path (dedupe, Great Expectations, one events commit). Every
record it looked at is then marked in one quarantine commit: ``replayed_at`` and
``replay_outcome`` (``ingested``, ``duplicate``, or ``quarantined``), and a line that still fails
keeps its record with the reason it fails with now. A record that entered the lake (or was found
there already) is never replayed again, so a second replay ingests nothing and no count doubles;
one that still fails stays replayable (a ``future_timestamp`` line replayed too early passes
later). ``outside_retention`` never replays, nor do records whose line is not stored whole
(file-level records, lines over the size limit).
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from . import lake as lk
from . import ledger as ledgers
from . import quarantine, raw
from .dedupe import EventIndex
from .events import NEVER_REPLAYED, REPLAYABLE, UTC_DATETIME, Window, normalize, route
from .ingest import COMMIT_ATTEMPTS, IngestSummary, Run, commit_events
from .inputs import BadInput
from .storage import Root
from .validation import warm_up

log = logging.getLogger(__name__)

KEY = ["batch_id", "source_file", "line_number"]


def replayable(reasons: Iterable[str] | None) -> list[str]:
    """The reasons to replay (all replayable ones by default); BadInput for an unknown or excluded one."""
    chosen = list(reasons or REPLAYABLE)
    for reason in chosen:
        if reason not in REPLAYABLE:
            why = "never replays" if reason in NEVER_REPLAYED else "is not a quarantine reason"
            raise BadInput(f"reason {reason!r} {why}: choose from {', '.join(REPLAYABLE)}")
    return chosen


def pending(lake: Root, reasons: list[str], since: date | None) -> pl.DataFrame:
    """Quarantine records not resolved yet, with one of ``reasons``, ingested on or after ``since``."""
    records = quarantine.read_all(lake, since=since, reasons=reasons)
    unresolved = pl.col("replay_outcome").is_null() | (pl.col("replay_outcome") == "quarantined")
    return records.filter(unresolved & pl.col("raw").is_not_null() & pl.col("line_number").is_not_null())


def reparse(records: pl.DataFrame, chunk_bytes: int = 32 << 20) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse the stored lines with the ingest parser: (rows, rejected), each with the record's ``_rid``.

    The lines go through the very same ``raw.read_chunks`` as at ingest, from a temporary file
    holding one record per line (line n is record n - 1).
    """
    with tempfile.TemporaryDirectory(prefix="audit-replay-") as tmp:
        data = ("\n".join(records["raw"].to_list()) + "\n").encode()
        Path(tmp, "replay.jsonl").write_bytes(data)
        file = raw.RawFile("replay.jsonl", len(data), "replay")
        chunks = list(raw.read_chunks(Root.open(tmp), file, chunk_bytes=chunk_bytes, limits=raw.Limits.from_env()))
    origin = records.select("_rid", "source_file", "line_number")

    def keyed(frame: pl.DataFrame) -> pl.DataFrame:
        rid = (pl.col("line_number") - 1).cast(pl.UInt32).alias("_rid")
        return frame.with_columns(rid).drop("source_file", "line_number").join(origin, on="_rid", how="left")

    rows = [keyed(c.rows) for c in chunks if c.rows.height]
    rejected = [keyed(c.rejected.filter(pl.col("line_number").is_not_null())) for c in chunks if c.rejected.height]
    return (
        pl.concat(rows) if rows else keyed(pl.DataFrame(schema=raw.PARSED_SCHEMA)),
        pl.concat(rejected)
        if rejected
        else pl.DataFrame(schema={"_rid": pl.UInt32, "reason": pl.String, "detail": pl.String}),
    )


def replay(
    lake_url: str,
    reasons: Iterable[str] | None = None,
    since: date | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
    retention_days: int = 90,
    validate: bool = True,
) -> dict[str, Any]:
    """Replay pending quarantine records; how many were ingested, were duplicates, or still fail (by reason)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    lake = Root.open(lake_url)
    chosen = replayable(reasons)
    records = pending(lake, chosen, since).with_row_index("_rid")
    result: dict[str, Any] = {
        "records": records.height,
        "dry_run": dry_run,
        "reasons": chosen,
        "ingested": 0,
        "duplicates": 0,
        "still_quarantined": {},
    }
    if records.is_empty():
        return result
    if validate and not dry_run:
        warm_up()  # GE's import overlaps the re-parse
    rows, rejected = reparse(records)
    window = Window(now=now, retention_days=retention_days, field_bytes=raw.Limits.from_env().field_bytes)
    routed = route(rows, window)
    valid = routed.filter(pl.col("reason").is_null())
    shaped = normalize(valid).with_columns(valid.select("source_file", "line_number", "_rid"))
    failing = pl.concat(
        [
            rejected.select("_rid", "reason", "detail"),
            routed.filter(pl.col("reason").is_not_null()).select("_rid", "reason", "detail"),
        ]
    )
    if dry_run:
        result.update(would_pass=shaped.height, still_quarantined=dict(Counter(failing["reason"].to_list())))
        return result
    run = Run(lake, window, now, validate, EventIndex(lake), ledgers.Ledger(), IngestSummary())
    batch_id = lk.new_batch_id(now)
    accepted, conflicts, duplicates = commit_events(
        run, shaped, batch_id, lk.commit_metadata(batch_id=batch_id, operation="replay", records=records.height)
    )
    none = pl.lit(None, pl.String)
    marks = pl.concat(
        [
            accepted.select("_rid", reason=none, detail=none, replay_outcome=pl.lit("ingested")),
            conflicts.select("_rid", "reason", "detail", replay_outcome=pl.lit("quarantined")),
            failing.with_columns(replay_outcome=pl.lit("quarantined")),
        ]
    )
    duplicate = (
        records.select("_rid")
        .join(marks.select("_rid"), on="_rid", how="anti")
        .with_columns(reason=none, detail=none, replay_outcome=pl.lit("duplicate"))
    )
    marks = pl.concat([marks, duplicate])
    mark(lake, records.join(marks, on="_rid", how="inner", suffix="_new"), now, batch_id)
    still = marks.filter(pl.col("replay_outcome") == "quarantined")
    result.update(
        ingested=accepted.height,
        duplicates=duplicates,
        still_quarantined=dict(Counter(still["reason"].to_list())),
        events_batch=batch_id,
    )
    log.info(
        "replayed %d records: %d ingested, %d duplicates, %d still quarantined",
        records.height,
        accepted.height,
        duplicates,
        still.height,
    )
    return result


def mark(lake: Root, marked: pl.DataFrame, now: datetime, batch_id: str) -> None:
    """Set replayed_at and replay_outcome (and the reason lines still fail with) in one merge commit.

    ``marked``: the records with ``reason_new``, ``detail_new`` (null: unchanged) and ``replay_outcome``.
    The commit carries ``batch_id``, so a commit whose answer was lost is found in the log
    (``lake.commit_once``); after a conflict the merge, which sets the same values, is made again.
    """
    source = marked.select(
        *KEY,
        pl.col("quarantined_at").dt.date().alias("ingest_date"),
        pl.col("reason_new").alias("reason"),
        pl.col("detail_new").alias("detail"),
        pl.col("replay_outcome_new").alias("replay_outcome"),
        replayed_at=pl.lit(now, UTC_DATETIME),
    )
    metadata = lk.commit_metadata(operation="replay", batch_id=batch_id, records=source.height)
    for _ in range(COMMIT_ATTEMPTS):
        table = quarantine.open_table(lake)
        try:
            lk.commit_once(table, metadata, lambda table=table: _merge_marks(table, source, metadata))
            return
        except lk.CommitConflict as exc:
            log.info("replay %s: %s; marking again", batch_id, exc)
    raise lk.CommitConflict(
        f"replay {batch_id}: the quarantine table kept changing; gave up after {COMMIT_ATTEMPTS} attempts "
        "(its events are in the lake; the next replay counts them as duplicates)"
    )


def _merge_marks(table: Any, source: pl.DataFrame, metadata: dict[str, str]) -> None:
    from deltalake import CommitProperties

    days = ", ".join(f"'{d.isoformat()}'" for d in source["ingest_date"].unique().sort())
    (
        table.merge(
            source.to_arrow(),
            source_alias="s",
            target_alias="t",
            predicate=f"t.ingest_date IN ({days}) AND t.ingest_date = s.ingest_date AND t.batch_id = s.batch_id"
            " AND t.source_file = s.source_file AND t.line_number = s.line_number",
            commit_properties=CommitProperties(custom_metadata=metadata),
        )
        .when_matched_update(
            {
                "replayed_at": "s.replayed_at",
                "replay_outcome": "s.replay_outcome",
                "reason": "CASE WHEN s.reason IS NULL THEN t.reason ELSE s.reason END",
                "detail": "CASE WHEN s.detail IS NULL THEN t.detail ELSE s.detail END",
            }
        )
        .execute()
    )
