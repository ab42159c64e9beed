"""Keeping the lake's tables fast: compaction, vacuum and checkpoints.

Ingest adds one small file per (date, organization) per batch. ``compact`` rewrites each
partition that holds more than one file into one file per ~512 MB, sorted by event_time then
event_id, as a commit that changes no data (``dataChange=false``): exports never become stale
because of it and retention is never blocked. It only removes the files it read, so an ingest
that commits meanwhile loses nothing. ``vacuum`` deletes files no commit references any more
(compacted, dropped by retention, left by a killed writer) once they are older than a safe
retention, and checkpoints keep opening a table cheap.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from . import lake as lk
from . import quarantine
from .dedupe import EventIndex
from .storage import Root

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 5
"""Tries per partition when other writers keep committing first."""

TARGET_FILE_BYTES = 512 << 20
DEFAULT_VACUUM_HOURS = 7 * 24
SORT = lk.STATS_COLUMNS


@dataclass
class CompactResult:
    partitions: int = 0
    files_removed: int = 0
    files_added: int = 0
    rows: int = 0
    versions: list[int] = field(default_factory=list)
    index_days: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def partitions_to_compact(files: pl.DataFrame, day: date | None = None) -> pl.DataFrame:
    """(event_date, organization_id, [paths], rows, bytes) of partitions holding more than one file."""
    if day is not None:
        files = files.filter(pl.col("event_date") == day)
    grouped = files.group_by("event_date", "organization_id").agg(
        pl.col("path"), pl.col("rows").sum(), pl.col("size_bytes").sum(), pl.len().alias("files")
    )
    return grouped.filter(pl.col("files") > 1).sort("event_date", "organization_id")


def _stats(part: pl.DataFrame) -> str:
    """Delta file statistics: row count, and min/max/null counts of the sort columns (for data skipping)."""

    def text(value: Any) -> Any:
        return value.isoformat().replace("+00:00", "Z") if hasattr(value, "isoformat") else value

    return json.dumps(
        {
            "numRecords": part.height,
            "minValues": {c: text(part[c].min()) for c in SORT},
            "maxValues": {c: text(part[c].max()) for c in SORT},
            "nullCount": {c: part[c].null_count() for c in SORT},
        }
    )


def _write_file(lake: Root, relative: str, part: pl.DataFrame) -> int:
    """Write one data file (without the partition columns, as Delta stores them) into the table; its size."""
    buffer = io.BytesIO()
    pq.write_table(
        lk.to_arrow(part, {c: t for c, t in lk.EVENT_COLUMNS.items() if c not in lk.PARTITION_COLUMNS}),
        buffer,
        compression="zstd",
    )
    data = buffer.getvalue()
    lake.write_bytes(lake.join(lk.EVENTS, relative), data)
    return len(data)


def compact_partition(
    lake: Root, table: Any, day: date, organization_id: str, paths: list[str], size_bytes: int
) -> tuple[int, int, int]:
    """Rewrite one partition's ``paths`` as sorted file(s) in one dataChange=false commit; (removed, added, rows)."""
    from deltalake import CommitProperties
    from deltalake.transaction import AddAction, RemoveAction

    frame = lk.read_table(
        lake, table, lk.EVENT_COLUMNS, [("event_date", "=", day.isoformat()), ("organization_id", "=", organization_id)]
    )
    frame = frame.sort(SORT)
    pieces = max(1, -(-size_bytes // TARGET_FILE_BYTES))
    step = -(-frame.height // pieces) if frame.height else 1
    directory = f"event_date={day.isoformat()}/organization_id={organization_id}"
    values = {"event_date": day.isoformat(), "organization_id": organization_id}
    stamp = int(time.time() * 1000)
    actions: list[Any] = []
    for i in range(pieces):
        part = frame.slice(i * step, step)
        if part.is_empty():
            continue
        relative = f"{directory}/part-compacted-{uuid.uuid4().hex}.zstd.parquet"
        size = _write_file(lake, relative, part)
        actions.append(AddAction(relative, size, values, stamp, False, _stats(part)))
    actions += [RemoveAction(p, False, stamp, None, values) for p in paths]
    table.create_write_transaction(
        actions,
        mode="append",
        schema=lk.arrow_schema(lk.EVENT_COLUMNS),
        partition_by=lk.PARTITION_COLUMNS,
        commit_properties=CommitProperties(
            custom_metadata=lk.commit_metadata(
                operation="compact", partition=f"{day.isoformat()}/{organization_id}", files_removed=len(paths)
            ),
            # on exactly the version read, never resolved against a newer one: delta-rs lets two
            # compactions that removed the same files both commit, which doubled the partition's rows
            max_commit_retries=0,
        ),
    )
    return len(paths), len(actions) - len(paths), frame.height


def _compact_latest(
    lake: Root, day: date, organization_id: str, paths: list[str], size: int
) -> tuple[tuple[int, int, int], Any] | None:
    """Compact one partition on the table's latest version, again from a fresh read when another writer
    committed first (an ingest, or another compaction); None when nothing is left to compact."""
    from deltalake.exceptions import CommitFailedError

    for _ in range(COMMIT_ATTEMPTS):
        table = lk.events_table(lake).open()  # the latest version: only files still live are rewritten
        live = set(
            lk.live_files(table)
            .filter((pl.col("event_date") == day) & (pl.col("organization_id") == organization_id))["path"]
            .to_list()
        )
        paths = [p for p in paths if p in live]
        if len(paths) < 2:
            return None
        try:
            return compact_partition(lake, table, day, organization_id, paths, size), table
        except CommitFailedError as exc:  # its new files stay unreferenced: vacuum removes them
            log.info("compaction of %s/%s: %s; reading it again", day, organization_id, exc)
    log.warning("compaction of %s/%s gave up: the table kept changing (the next run retries)", day, organization_id)
    return None


def compact(lake_url: str, day: date | None = None) -> CompactResult:
    """Compact every partition of the events table holding more than one file (only ``day``'s, if given)."""
    lake = Root.open(lake_url)
    result = CompactResult()
    table = lk.events_table(lake).open()
    if table is None:
        return result
    todo = partitions_to_compact(lk.live_files(table), day)
    for part_day, org, paths, _, size, _ in todo.iter_rows():
        done = _compact_latest(lake, part_day, org, paths, size)
        if done is None:
            continue
        (removed, added, rows), table = done
        result.partitions += 1
        result.files_removed += removed
        result.files_added += added
        result.rows += rows
        result.versions.append(table.version())
        log.info("compacted %s/%s: %d files -> %d (%d rows)", part_day, org, removed, added, rows)
    result.index_days = EventIndex(lake).consolidate(lk.events_table(lake).open())
    return result


def vacuum(lake_url: str, hours: int = DEFAULT_VACUUM_HOURS) -> dict[str, Any]:
    """Delete files of the lake's tables that no version newer than ``hours`` references; checkpoint them."""
    lake = Root.open(lake_url)
    out: dict[str, Any] = {"retention_hours": hours, "removed": {}}
    for name, table in (("events", lk.events_table(lake)), ("quarantine", quarantine.table(lake))):
        opened = table.open()
        if opened is None:
            continue
        removed = opened.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False, full=True)
        opened.create_checkpoint()
        opened.cleanup_metadata()
        out["removed"][name] = len(removed)
    return out


def table_summary(table: Any) -> dict[str, Any]:
    """Files and rows of an open table (for status and tests)."""
    files = pa.table(table.get_add_actions(flatten=True))
    return {
        "version": table.version(),
        "files": files.num_rows,
        "rows": int(pa.compute.sum(files.column("num_records")).as_py() or 0),
    }
