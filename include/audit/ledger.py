"""The ledger: which raw files ingest has consumed, and how far into each.

The truth is the quarantine table's commit log: every batch ends with one commit there whose
metadata names, for each raw file it read, the file's signature, the last line it covered and
whether that was the end of the file. ``_state/ingested.parquet`` is a snapshot of that log
folded up to a table version, so a run reads the snapshot plus the few commits after it, never
the whole history. Entries of files that left the raw root are pruned from the snapshot, so the
ledger follows the raw root's own lifecycle (e.g. an S3 expiration rule on the raw bucket).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from . import lake as lk
from .raw import RawFile
from .storage import Root

log = logging.getLogger(__name__)

SNAPSHOT = "ingested.parquet"
_SCHEMA = {
    "path": pl.String(),
    "signature": pl.String(),
    "through_line": pl.Int64(),
    "done": pl.Boolean(),
    "batch_id": pl.String(),
    "version": pl.Int64(),
}


@dataclass(frozen=True)
class Progress:
    """How far committed batches got into one raw file (with this signature)."""

    signature: str
    through_line: int
    done: bool
    batch_id: str


@dataclass
class Ledger:
    """Consumed raw files as of quarantine table version ``version`` (-1: nothing yet)."""

    version: int = -1
    files: dict[str, Progress] = field(default_factory=dict)

    def start_line(self, file: RawFile) -> int | None:
        """Where work on ``file`` resumes: 0 for a new or changed file, the last committed line, or None when done."""
        progress = self.files.get(file.path)
        if progress is None or progress.signature != file.signature:
            return 0
        return None if progress.done else progress.through_line

    def pending(self, files: Iterable[RawFile]) -> list[tuple[RawFile, int]]:
        """The files with work left, each with the line it resumes after."""
        return [(f, start) for f in files if (start := self.start_line(f)) is not None]

    def record(self, version: int, batch_id: str, consumed: dict[str, list[Any]]) -> None:
        """Fold in one committed batch: path -> [signature, through_line, done]."""
        for path, (signature, through_line, done) in consumed.items():
            self.files[path] = Progress(signature, int(through_line), bool(done), batch_id)
        self.version = max(self.version, version)

    def catch_up(self, quarantine_table: Any) -> None:
        """Fold in the batches committed after ``version`` (by this run's crash predecessors or by others)."""
        latest = quarantine_table.version()
        if latest <= self.version:
            return
        commits = quarantine_table.history(limit=latest - self.version)
        for commit in sorted(commits, key=lambda c: c["version"]):
            meta = lk.read_commit_metadata(commit)
            if commit["version"] > self.version and "files" in meta:
                self.record(commit["version"], str(meta.get("batch_id", "")), meta["files"])
        self.version = latest


def snapshot_path(lake: Root) -> str:
    return lake.join(lk.STATE, SNAPSHOT)


def load(lake: Root, quarantine_table: Any) -> Ledger:
    """The ledger as of the quarantine table's latest version: snapshot plus the commits after it."""
    ledger = Ledger()
    path = snapshot_path(lake)
    if lake.exists(path):
        frame = pl.read_parquet(io.BytesIO(lake.read_bytes(path)))
        for row in frame.iter_rows(named=True):
            ledger.files[row["path"]] = Progress(row["signature"], row["through_line"], row["done"], row["batch_id"])
        ledger.version = int(frame["version"].max()) if frame.height else -1  # type: ignore[arg-type]
        if not frame.height:  # an empty snapshot keeps its version in the file's metadata
            ledger.version = int(pl.read_parquet_metadata(io.BytesIO(lake.read_bytes(path))).get("version", -1))
    ledger.catch_up(quarantine_table)
    return ledger


def save(lake: Root, ledger: Ledger, present: Iterable[str] | None = None) -> int:
    """Write the snapshot, without entries of files no longer in the raw root (``present``); entries pruned."""
    keep = set(present) if present is not None else None
    rows = [
        (p, x.signature, x.through_line, x.done, x.batch_id, ledger.version)
        for p, x in sorted(ledger.files.items())
        if keep is None or p in keep
    ]
    frame = pl.DataFrame(rows, schema=_SCHEMA, orient="row")
    buffer = io.BytesIO()
    frame.write_parquet(buffer, metadata={"version": str(ledger.version)})
    lake.write_bytes(snapshot_path(lake), buffer.getvalue())
    return len(ledger.files) - len(rows)
