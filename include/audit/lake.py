"""The lake: where everything lives below the lake root, and how Parquet goes in and out.

Layout (hive-style, readable by polars, pyarrow and DuckDB)::

    events/event_date=YYYY-MM-DD/organization_id=<org>/part-<batch>.parquet
    quarantine/ingest_date=YYYY-MM-DD/part-<batch>.parquet
    _validation/<batch>.json, <batch>.html      Great Expectations result + Data Docs page
    _state/ingested/<batch>.json                committed batches: which raw files they consumed

Partition columns live in the path only, as hive layout expects.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Callable, Iterable, Iterator, Sequence

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from .events import LAKE_SCHEMA, PARTITION_SCHEMA
from .storage import Root, is_hidden

EVENTS = "events"
QUARANTINE = "quarantine"
VALIDATION = "_validation"
STATE = "_state"

WRITE_THREADS = 4

FILE_SCHEMA: dict[str, pl.DataType] = {k: v for k, v in LAKE_SCHEMA.items() if k not in PARTITION_SCHEMA}
"""Columns stored inside an event Parquet file (the partition keys are in its path)."""

_ARROW_PARTITIONING = ds.partitioning(
    pa.schema([("event_date", pa.date32()), ("organization_id", pa.string())]), flavor="hive"
)


def new_batch_id(now: datetime) -> str:
    """A sortable, unique batch id: ``YYYYMMDDTHHMMSSZ-<random>``."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def partition_dir(lake: Root, day: date, organization_id: str) -> str:
    return lake.join(EVENTS, f"event_date={day.isoformat()}", f"organization_id={organization_id}")


def date_dir(lake: Root, day: date) -> str:
    return lake.join(EVENTS, f"event_date={day.isoformat()}")


def event_dates(lake: Root) -> list[date]:
    """The event dates that have a partition, oldest first."""
    days = []
    for name in lake.listdir(lake.join(EVENTS)):
        if name.startswith("event_date="):
            with contextlib.suppress(ValueError):
                days.append(date.fromisoformat(name.removeprefix("event_date=")))
    return sorted(days)


def organizations(lake: Root, day: date) -> list[str]:
    """The organizations with a partition on ``day``."""
    return [n.removeprefix("organization_id=") for n in lake.listdir(date_dir(lake, day))
            if n.startswith("organization_id=")]


def partition_files(lake: Root, day: date, organization_id: str) -> list[str]:
    """The complete Parquet files of one (date, organization) partition, in name order."""
    return _parquet_files(lake, partition_dir(lake, day, organization_id))


def _parquet_files(lake: Root, directory: str) -> list[str]:
    """The complete Parquet files below ``directory``, in name order (temporary files left out)."""
    return [f for f in lake.find(directory, (".parquet",)) if not is_hidden(f)]


# --- Parquet ----------------------------------------------------------------------------------

def to_parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=True)
    return buffer.getvalue()


def read_parquet(root: Root, paths: Sequence[str], columns: Sequence[str] | None = None,
                 schema: dict[str, pl.DataType] = FILE_SCHEMA) -> pl.DataFrame:
    """Read Parquet files through the root's filesystem (so remote roots share its credentials)."""
    if not paths:
        return pl.DataFrame(schema={c: schema[c] for c in columns or schema})
    if root.is_local:
        return pl.read_parquet(list(paths), columns=list(columns) if columns else None)
    table = ds.dataset(list(paths), filesystem=root.fs, format="parquet").to_table(columns=columns)
    return pl.from_arrow(table)  # type: ignore[return-value]


def read_partition(lake: Root, day: date, organization_id: str, columns: Sequence[str] | None = None
                   ) -> pl.DataFrame:
    """All events of one (date, organization), with the partition columns added back."""
    frame = read_parquet(lake, partition_files(lake, day, organization_id), columns)
    return frame.with_columns(organization_id=pl.lit(organization_id, pl.String))


def _arrow_filesystem(root: Root) -> pafs.FileSystem | Any:
    return pafs.LocalFileSystem() if root.is_local else root.fs


def event_files(lake: Root) -> list[str]:
    """Every complete event Parquet file in the lake."""
    return _parquet_files(lake, lake.join(EVENTS))


def lookup_events(lake: Root, event_ids: pl.Series, columns: Sequence[str], files: Sequence[str]) -> pl.DataFrame:
    """Rows of ``files`` whose event_id is in ``event_ids``: the lake-wide uniqueness check.

    Reads only the event_id column of every file, and the other ``columns`` of files with a match.
    """
    schema = {c: LAKE_SCHEMA[c] for c in columns}
    if len(event_ids) == 0 or not files:
        return pl.DataFrame(schema=schema)

    def dataset(paths: Sequence[str]) -> ds.Dataset:
        return ds.dataset(list(paths), filesystem=_arrow_filesystem(lake), format="parquet",
                          partitioning=_ARROW_PARTITIONING, partition_base_dir=lake.join(EVENTS))

    wanted = ds.field("event_id").isin(event_ids.to_arrow())
    # Two passes: the event_id column alone answers "any repeats?" (usually none); only then
    # read the other columns, and only of the files that hold a repeat.
    hits = ds.Scanner.from_dataset(dataset(files), columns=["event_id", "__filename"], filter=wanted, batch_readahead=2,
                                   fragment_readahead=4).to_table()
    if hits.num_rows == 0:
        return pl.DataFrame(schema=schema)
    # Repeats can be spread over every file of the lake: read them a few at a time (bounded memory).
    with_repeats = sorted(set(hits.column("__filename").to_pylist()))
    table = ds.Scanner.from_dataset(dataset(with_repeats), columns=list(columns), filter=wanted, batch_readahead=2,
                                    fragment_readahead=2).to_table()
    return pl.from_arrow(table).cast(schema)  # type: ignore[union-attr]


def write_partitions(lake: Root, events: pl.DataFrame, batch_id: str) -> list[str]:
    """Write lake-shaped ``events`` as one file per (event_date, organization) named after the batch."""
    keyed = events.with_columns(pl.col("event_time").dt.date().alias("event_date"))
    parts = keyed.sort("event_time", "event_id").partition_by("event_date", "organization_id", as_dict=True)

    def write(key: tuple, part: pl.DataFrame) -> str:
        path = lake.join(partition_dir(lake, *key), f"part-{batch_id}.parquet")
        lake.write_bytes(path, to_parquet(part.select(list(FILE_SCHEMA))))
        return path

    # Compression and (remote) PUTs release the GIL: a few threads hide their latency.
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        return list(pool.map(lambda item: write(*item), parts.items()))


# --- state ------------------------------------------------------------------------------------

def write_json(root: Root, path: str, payload: Any) -> None:
    root.write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(root: Root, path: str) -> Any:
    return json.loads(root.read_bytes(path))


def ledger_dir(lake: Root) -> str:
    return lake.join(STATE, "ingested")


def committed_batches(lake: Root) -> dict[str, dict]:
    """batch id -> its committed ledger entry (raw file path -> signature, counts)."""
    return {p.rsplit("/", 1)[-1].removesuffix(".json"): read_json(lake, p)
            for p in lake.find(ledger_dir(lake), (".json",))}


def commit_batch(lake: Root, batch_id: str, entry: dict) -> None:
    """Mark a batch done: the last write of a batch, so a crash before it leaves it uncommitted."""
    write_json(lake, lake.join(ledger_dir(lake), f"{batch_id}.json"), entry)


# --- lease ------------------------------------------------------------------------------------

class LeaseHeld(RuntimeError):
    """Another ingest holds the lake's lease."""


@contextlib.contextmanager
def lease(lake: Root, name: str = "ingest", wait_seconds: float = 600.0,
          ttl_seconds: float | None = None) -> Iterator[Callable[[], None]]:
    """Exclusive access to the lake for one writer, held until the block ends; yields a fence to call
    before each write, which raises if the lease can no longer be proven ours.

    A second writer waits up to ``wait_seconds`` for the first to finish, then gives up.
    Local roots use an OS file lock (released by the kernel if the holder dies); object stores an
    expiring lease object written with conditional requests (see ``leases``).
    """
    if not lake.is_local:
        from .leases import ObjectLease, ttl_from_env

        held = ObjectLease(lake, lake.join(STATE, f"{name}.lease"), ttl_seconds or ttl_from_env(), wait_seconds)
        held.acquire()
        try:
            yield held.fence
        finally:
            held.release()
        return
    import fcntl

    path = lake.join(STATE, f"{name}.lock")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LeaseHeld(f"another {name} still holds {path} after {wait_seconds:.0f}s") from None
                time.sleep(0.2)
        try:
            yield lambda: None  # the kernel's lock cannot be lost while the process lives
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --- partition metadata (the Delta version reads these from the table's log) ------------------

def partition_row_counts(lake: Root, days: Iterable[date] | None = None) -> dict[tuple[date, str], int]:
    """Live rows per (event_date, organization_id), from Parquet footers (no data is read)."""
    import pyarrow.parquet as pq

    counts: dict[tuple[date, str], int] = {}
    for day in (event_dates(lake) if days is None else days):
        for org in organizations(lake, day):
            total = 0
            for path in partition_files(lake, day, org):
                with lake.fs.open(path, "rb") as handle:
                    total += pq.ParquetFile(handle).metadata.num_rows
            counts[(day, org)] = total
    return counts


def drop_partitions(lake: Root, keys: Sequence[tuple[date, str]]) -> None:
    """Remove the (event_date, organization_id) partitions ``keys``, and dates left empty."""
    for day, org in keys:
        lake.remove(partition_dir(lake, day, org), recursive=True)
    for day in sorted({day for day, _ in keys}):
        if not organizations(lake, day):
            lake.remove(date_dir(lake, day), recursive=True)
