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

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import polars as pl
import pyarrow as pa

from . import lake as lk
from . import quarantine
from .dedupe import EventIndex
from .storage import Root, error_line

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 5
"""Tries per commit when other writers keep committing first."""
GROUP_PARTITIONS = 64
GROUP_BYTES = 1 << 30
"""A compaction commit covers at most this many partitions, or this many bytes of their files."""

TARGET_FILE_BYTES = 512 << 20
DEFAULT_VACUUM_HOURS = 7 * 24

Partition = tuple[date, str, list[str], int]
"""(event_date, organization_id, paths of its live files, their bytes): one partition to compact."""


@dataclass
class CompactResult:
    partitions: int = 0
    files_removed: int = 0
    files_added: int = 0
    rows: int = 0
    versions: list[int] = field(default_factory=list)
    index_days: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # "YYYY-MM-DD/org" -> why it could not be rewritten

    def add(self, other: CompactResult) -> None:
        self.partitions += other.partitions
        self.files_removed += other.files_removed
        self.files_added += other.files_added
        self.rows += other.rows
        self.versions += other.versions

    def as_dict(self) -> dict[str, Any]:
        """The run's report; ``failed`` only when a partition could not be read or written."""
        report = asdict(self)
        if not self.failed:
            del report["failed"]
        return report


def partitions_to_compact(files: pl.DataFrame, day: date | None = None) -> pl.DataFrame:
    """(event_date, organization_id, [paths], rows, bytes) of partitions holding more than one file."""
    if day is not None:
        files = files.filter(pl.col("event_date") == day)
    grouped = files.group_by("event_date", "organization_id").agg(
        pl.col("path"), pl.col("rows").sum(), pl.col("size_bytes").sum(), pl.len().alias("files")
    )
    return grouped.filter(pl.col("files") > 1).sort("event_date", "organization_id")


@dataclass(frozen=True)
class Rewrite:
    """One partition rewritten: the files it replaces, the Add and Remove actions that swap them, its rows."""

    replaces: frozenset[str]
    actions: list[Any]
    rows: int


def _rewrite_partition(lake: Root, table: Any, part: Partition) -> Rewrite:
    """Write one partition's rows as sorted file(s). ``part`` lists the partition's live files at
    ``table``'s version, which are exactly the files read and the files removed."""
    from deltalake.transaction import RemoveAction

    day, organization_id, paths, size_bytes = part
    frame = lk.read_table(
        lake, table, lk.EVENT_COLUMNS, [("event_date", "=", day.isoformat()), ("organization_id", "=", organization_id)]
    )
    pieces = max(1, -(-size_bytes // TARGET_FILE_BYTES))
    actions = lk.write_event_files(
        lake, frame, data_change=False, rows_per_file=-(-frame.height // pieces), codec=lk.COMPACTED_CODEC
    )
    values = {"event_date": day.isoformat(), "organization_id": organization_id}
    stamp = int(time.time() * 1000)
    removes = [RemoveAction(p, False, stamp, None, values) for p in paths]
    return Rewrite(frozenset(paths), actions + removes, frame.height)


def _commit_rewrites(table: Any, rewrites: dict[tuple[date, str], Rewrite]) -> CompactResult:
    """Commit ``rewrites`` in one dataChange=false commit on exactly ``table``'s version."""
    done = CompactResult(partitions=len(rewrites))
    for rewrite in rewrites.values():
        done.files_removed += len(rewrite.replaces)
        done.files_added += len(rewrite.actions) - len(rewrite.replaces)
        done.rows += rewrite.rows
    metadata = lk.commit_metadata(
        operation="compact",
        partitions=[f"{d.isoformat()}/{o}" for d, o in sorted(rewrites)],
        files_removed=done.files_removed,
    )
    # on exactly the version read, never resolved by delta-rs against a newer one: it let two
    # compactions that removed the same files both commit, which doubled the partition's rows
    actions = [action for rewrite in rewrites.values() for action in rewrite.actions]
    done.versions.append(lk.commit_event_files(table, actions, metadata))
    return done


def _compact_latest(lake: Root, parts: list[Partition], failed: dict[str, str]) -> CompactResult | None:
    """Compact ``parts`` on the table's latest version; None when nothing is left to compact.

    When another writer commits first, a partition's rewrite stays valid as long as every file it
    replaces is still live (Delta's rule: appends do not conflict with a compaction; files added
    meanwhile stay beside the new one), so only partitions that lost a file are rewritten again.
    Each attempt lists the partitions' files afresh: a rewrite reads and removes the same files.
    A partition that cannot be read or written is left as it is and named in ``failed``: one bad
    partition never keeps the others from being compacted.
    """
    wanted = {(d, o) for d, o, _, _ in parts}
    rewrites: dict[tuple[date, str], Rewrite] = {}
    for _ in range(COMMIT_ATTEMPTS):
        table = lk.events_table(lake).open()
        files = lk.live_files(table)
        live = set(files["path"].to_list())
        rewrites = {key: r for key, r in rewrites.items() if r.replaces <= live}
        for day, org, paths, _, size, _ in partitions_to_compact(files).iter_rows():
            key = f"{day.isoformat()}/{org}"
            if (day, org) not in wanted or (day, org) in rewrites or key in failed:
                continue
            try:
                rewrites[(day, org)] = _rewrite_partition(lake, table, (day, org, paths, size))
            except Exception as exc:  # left as it is; the others go on
                failed[key] = error_line(exc)
                log.error("compaction of %s failed: %s", key, failed[key])
        if not rewrites:
            return None
        try:
            return _commit_rewrites(table, rewrites)
        except lk.CommitConflict as exc:  # the files of rewrites dropped here stay unreferenced: vacuum removes them
            log.info("compaction of %d partitions: %s; checking them again", len(rewrites), exc)
    log.warning("compaction of %d partitions gave up: the table kept changing (the next run retries)", len(parts))
    return None


def groups(todo: pl.DataFrame) -> Iterator[list[Partition]]:
    """The partitions to compact, in commits of at most GROUP_PARTITIONS partitions or GROUP_BYTES of
    files: few commits (not one per partition), and a conflict redoes one group only."""
    group: list[Partition] = []
    size = 0
    for day, org, paths, _, part_bytes, _ in todo.iter_rows():
        if group and (len(group) >= GROUP_PARTITIONS or size + part_bytes > GROUP_BYTES):
            yield group
            group, size = [], 0
        group.append((day, org, paths, part_bytes))
        size += part_bytes
    if group:
        yield group


def compact(lake_url: str, day: date | None = None) -> CompactResult:
    """Compact every partition of the events table holding more than one file (only ``day``'s, if
    given); those that could not be rewritten are in ``failed``."""
    lake = Root.open(lake_url)
    result = CompactResult()
    table = lk.events_table(lake).open()
    if table is None:
        return result
    for group in groups(partitions_to_compact(lk.live_files(table), day)):
        done = _compact_latest(lake, group, result.failed)
        if done is None:
            continue
        result.add(done)
        log.info(
            "compacted %d partitions: %d files -> %d (%d rows), version %d",
            done.partitions,
            done.files_removed,
            done.files_added,
            done.rows,
            done.versions[-1],
        )
    result.index_days = EventIndex(lake).consolidate(lk.events_table(lake).open())
    return result


def vacuum(lake_url: str, hours: int = DEFAULT_VACUUM_HOURS) -> dict[str, Any]:
    """Delete files of the lake's tables that no version newer than ``hours`` references; checkpoint them."""
    lake = Root.open(lake_url)
    out: dict[str, Any] = {"retention_hours": hours, "removed": {}}
    for name, table in (("events", lk.events_table(lake)), ("quarantine", quarantine.table(lake))):
        removed = lk.again_if_lost(table.uri, lambda table=table: _vacuum_table(table, hours))
        if removed is not None:
            out["removed"][name] = removed
    return out


def _vacuum_table(table: lk.Table, hours: int) -> int | None:
    """Vacuum and checkpoint one table; the files removed (None: no table). Idempotent: after a lost
    request it is run again, and removes what the first pass left (so it may count fewer)."""
    opened = table.open()
    if opened is None:
        return None
    removed = opened.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False, full=True)
    opened.create_checkpoint()
    opened.cleanup_metadata()
    return len(removed)


def table_summary(table: Any) -> dict[str, Any]:
    """Files and rows of an open table (for status and tests)."""
    files = pa.table(table.get_add_actions(flatten=True))
    return {
        "version": table.version(),
        "files": files.num_rows,
        "rows": int(pa.compute.sum(files.column("num_records")).as_py() or 0),
    }
