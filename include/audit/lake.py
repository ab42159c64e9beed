"""The lake: Delta Lake tables below the lake root, and how events go in and come out.

Layout (any Delta reader works: deltalake, ``pl.scan_delta``, DuckDB's delta extension, Spark, Trino)::

    events/       Delta table, partitioned by event_date (date) and organization_id (string)
    quarantine/   Delta table, partitioned by ingest_date (see ``quarantine``)
    _state/ingested.parquet          which raw files committed batches consumed (see ``ledger``)
    _state/event-ids/                event-id index: per-day pieces and all.parquet (see ``dedupe``)
    _validation/  Great Expectations results and Data Docs

Every change is one Delta commit. Ingest commits against the exact version it deduplicated
against (no blind retry), so a writer that was paused while another one committed fails its
commit instead of doubling events; readers only ever see committed files. Events files are
written here (one Parquet file per partition, a few at a time) and committed as Add actions; the
quarantine's small appends go through delta-rs's writer.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import polars as pl

from .events import LAKE_SCHEMA, PARTITION_SCHEMA
from .storage import Root, delta_options, describe_error, from_delta_rs, local_path, local_path_of

if TYPE_CHECKING:  # imported where used: pyarrow costs 0.2 s that a reading command never needs
    import pyarrow as pa

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENTS = "events"
QUARANTINE = "quarantine"
VALIDATION = "_validation"
STATE = "_state"

PARTITION_COLUMNS: list[str] = list(PARTITION_SCHEMA)
EVENT_COLUMNS: dict[str, pl.DataType] = {**LAKE_SCHEMA, "event_date": pl.Date()}
"""Columns of the events table, partition columns included."""

TABLE_CONFIGURATION: dict[str, str] = {
    "delta.checkpointInterval": "20",  # opening a table reads at most ~20 commits after a checkpoint
    "delta.logRetentionDuration": "interval 30 days",
    "delta.deletedFileRetentionDuration": "interval 7 days",
}
FILE_ORDER = ("event_time", "event_id")
"""How the rows of every events data file are sorted, by ingest and by compaction alike."""
STATS_COLUMNS = list(FILE_ORDER)
"""The events columns each data file keeps min/max statistics for: the sort order, so a time range
skips files. Only these: full statistics made each file's entry in the log ~1.8 KB, and a table's
open state grows with its files (+160 MB at 20,000 files)."""
METADATA_PREFIX = "audit."
"""Keys of our entries in a commit's metadata (``DeltaTable.history()`` shows them)."""


class CommitConflict(RuntimeError):
    """Another writer committed to the table since we read it: re-read and try again."""


def commit_once(table: Any, metadata: Mapping[str, str], write: Callable[[], Any]) -> int:
    """Make one commit with ``write`` (a delta-rs call that commits ``metadata`` on exactly the version
    ``table`` was read at); the new version. CommitConflict if another writer committed first.

    A commit whose request failed on the way to an object store has an unknown outcome: delta-rs
    never retries S3's conditional PUT of a commit, whose first try may have landed. The log then
    says: a commit after the read version with our ``metadata`` is ours (the handle is advanced to
    the latest version to look); none is a CommitConflict, so the caller reads again and retries.
    """
    from deltalake.exceptions import CommitFailedError

    read = table.version()
    try:
        write()
    except CommitFailedError as exc:
        raise CommitConflict(f"{table.table_uri} changed since version {read}: {exc}") from None
    except OSError as exc:
        if not lost_on_the_way(table.table_uri, exc):
            raise
        version = _landed(table, read, metadata)
        if version is None:
            raise CommitConflict(
                f"{table.table_uri}: a commit on version {read} failed on the way and is not in the log "
                f"({describe_error(exc)})"
            ) from None
        log.warning("%s: the commit's answer was lost, but it is in the log as version %d", table.table_uri, version)
        return version
    return max(read + 1, table.version())


def lost_on_the_way(uri: str, exc: OSError) -> bool:
    """Whether ``exc`` is delta-rs failing a request to the object store holding ``uri`` (whose
    effect is then unknown), not a local disk's error."""
    return local_path_of(uri) is None and from_delta_rs(exc)


def again_if_lost(uri: str, step: Callable[[], T], tries: int = 3) -> T:
    """``step()`` (idempotent: it reads the table again itself), made again when a request of it to the
    object store holding ``uri`` failed on the way (its effect unknown): for table maintenance, whose
    log commits delta-rs never retries either (see commit_once)."""
    for attempt in range(1, tries + 1):
        try:
            return step()
        except OSError as exc:
            if attempt == tries or not lost_on_the_way(uri, exc):
                raise
            log.warning("%s: a request failed on the way (%s); once more", uri, describe_error(exc))
    raise AssertionError("unreachable")


def _landed(table: Any, read: int, metadata: Mapping[str, str], looks: int = 3) -> int | None:
    """The version after ``read`` whose commit carries ``metadata``, if any (the latest 100 looked at).

    delta-rs's history reads the log's newest commits but numbers them down from the handle's
    version, so a commit landing between the two would shift every number by one. The handle's
    version is read again after the history; if it moved, the log is read again (``looks`` times at
    most, then None: the caller deduplicates again, which doubles nothing).
    """
    for _ in range(looks):
        table.update_incremental()
        latest = table.version()
        if latest <= read:
            return None
        commits = table.history(limit=min(latest - read, 100))  # may hold older ones too
        ours = [
            c["version"] for c in commits if c["version"] > read and all(c.get(k) == v for k, v in metadata.items())
        ]
        table.update_incremental()
        if table.version() == latest:
            return int(ours[0]) if ours else None
    return None


# --- tables -----------------------------------------------------------------------------------


def configuration(stats_columns: Sequence[str] = ()) -> dict[str, str]:
    """A new table's properties; its files keep statistics of ``stats_columns`` only (all if none)."""
    stats = {"delta.dataSkippingStatsColumns": ",".join(stats_columns)} if stats_columns else {}
    return {**TABLE_CONFIGURATION, **stats}


@dataclass(frozen=True)
class Table:
    """One Delta table of the lake: its URI and the storage options delta-rs needs to reach it."""

    uri: str
    storage_options: dict[str, str] | None

    @classmethod
    def at(cls, lake: Root, name: str) -> Table:
        return cls(lake.uri(name), delta_options(lake))

    def open(self, version: int | None = None) -> Any | None:
        """The table (a ``DeltaTable``) at ``version`` (default: latest), or None if it was never created."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.uri, version=version, storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def configure(self, stats_columns: Sequence[str] = ()) -> list[str]:
        """Set the table properties this version creates tables with on a table made before (a
        converted lake, or an older Delta one); the names of those it set, none if all were."""
        table = self.open()
        if table is None:
            return []
        current = table.metadata().configuration
        missing = {k: v for k, v in configuration(stats_columns).items() if current.get(k) != v}

        def set_missing() -> None:
            table.update_incremental()  # after a lost request: set what is still missing
            now = table.metadata().configuration
            if left := {k: v for k, v in missing.items() if now.get(k) != v}:
                table.alter.set_table_properties(left)

        if missing:
            again_if_lost(self.uri, set_missing)
        return sorted(missing)

    def ensure(self, schema: pa.Schema, partition_by: list[str], stats_columns: Sequence[str] = ()) -> Any:
        """The table, created empty first if it does not exist yet (safe when several writers race);
        its files keep statistics of ``stats_columns`` only (all columns if none are named). A
        creation whose request failed on the way is looked for, and made, once more."""
        return again_if_lost(self.uri, lambda: self._open_or_create(schema, partition_by, stats_columns), tries=2)

    def _open_or_create(self, schema: pa.Schema, partition_by: list[str], stats_columns: Sequence[str]) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import CommitFailedError, DeltaError

        table = self.open()
        if table is not None:
            return table
        try:
            return DeltaTable.create(
                self.uri,
                schema,
                mode="ignore",
                partition_by=partition_by,
                configuration=configuration(stats_columns),
                storage_options=self.storage_options,
            )
        except (CommitFailedError, DeltaError):  # another writer created it a moment ago
            table = self.open()
            if table is None:
                raise
            return table


def events_table(lake: Root) -> Table:
    return Table.at(lake, EVENTS)


def arrow_schema(columns: Mapping[str, pl.DataType]) -> pa.Schema:
    """The Arrow schema of a table with these polars columns (plain strings, µs UTC timestamps)."""
    return pl.DataFrame(schema=dict(columns)).to_arrow(compat_level=pl.CompatLevel.oldest()).schema


def to_arrow(frame: pl.DataFrame, columns: Mapping[str, pl.DataType]) -> pa.Table:
    """``frame`` in the table's column order and types, as Arrow."""
    return frame.select(pl.col(c).cast(t) for c, t in columns.items()).to_arrow(compat_level=pl.CompatLevel.oldest())


def open_events(lake: Root) -> Any:
    """The events table, created if the lake is new."""
    return events_table(lake).ensure(arrow_schema(EVENT_COLUMNS), PARTITION_COLUMNS, STATS_COLUMNS)


def commit_metadata(**entries: Any) -> dict[str, str]:
    """Our entries for a commit's metadata, JSON-encoded where they are not text."""
    return {
        METADATA_PREFIX + k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        for k, v in entries.items()
    }


def read_commit_metadata(commit: Mapping[str, Any]) -> dict[str, Any]:
    """The entries :func:`commit_metadata` wrote, decoded, from one ``history()`` record."""
    out = {}
    for key, value in commit.items():
        if key.startswith(METADATA_PREFIX):
            try:
                out[key.removeprefix(METADATA_PREFIX)] = json.loads(value) if isinstance(value, str) else value
            except ValueError:
                out[key.removeprefix(METADATA_PREFIX)] = value
    return out


def append(table: Any, data: pa.Table, partition_by: list[str], metadata: dict[str, str]) -> int:
    """Append ``data`` as one commit on top of exactly the version ``table`` was read at; the new version.

    No blind retry: if anyone committed since that version, CommitConflict, and the caller
    re-reads (e.g. deduplicates again) before trying once more.
    """
    import pyarrow as pa
    from deltalake import CommitProperties, WriterProperties, write_deltalake

    names = pa.schema(table.schema().to_arrow()).names  # a migrated table keeps its files' column order
    return commit_once(
        table,
        metadata,
        lambda: write_deltalake(
            table,
            data.select(names),
            mode="append",
            partition_by=partition_by,
            writer_properties=WriterProperties(compression="ZSTD"),
            commit_properties=CommitProperties(custom_metadata=metadata, max_commit_retries=0),
        ),
    )


WRITE_THREADS = 4
"""Data files encoded and uploaded at once (Parquet encoding, compression and uploads release the GIL)."""
INGEST_CODEC = "snappy"
"""Compression of the files an ingest batch writes. They live a day (the daily compaction rewrites
them) and are many: the 1M-event benchmark writes 4,200 of ~190 rows, where snappy encodes a file in
about half zstd's CPU (0.47 against 0.89 ms) for files 1.5x the size. Spark's and delta-rs's default too."""
COMPACTED_CODEC = "zstd"
"""Compression of the files compaction writes: they are kept, so the smaller encoding."""
SMALL_FILE_ROWS = 20_000
"""A file of at most this many rows (one row group: nothing inside it to prune; the Delta log keeps its
statistics) is written without Parquet dictionaries and statistics: an ingest batch's ~800 small
files encode in 0.55 s instead of 0.9 s, and are no bigger. Bigger files (a busy partition,
compacted) keep both."""


def write_event_files(
    lake: Root,
    frame: pl.DataFrame,
    *,
    data_change: bool = True,
    rows_per_file: int | None = None,
    codec: str = INGEST_CODEC,
) -> list[Any]:
    """Write ``frame`` (events table columns) as one Parquet file per partition, or per
    ``rows_per_file`` rows of it, each sorted by ``FILE_ORDER`` and compressed with ``codec``; the
    Delta Add actions that commit them.

    Memory holds one encoded file per thread. delta-rs's writer keeps a Parquet writer open per
    partition until the end: +270 MiB for a 64 MB batch spread over 800 partitions, against
    +40 MiB here. Files become visible only through the commit (``commit_event_files``).
    """
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    frame = frame.sort([*PARTITION_COLUMNS, *FILE_ORDER], maintain_order=True)  # each file's rows are contiguous
    per_file = rows_per_file or max(frame.height, 1)
    pieces = (
        frame.with_row_index("_row")
        .group_by(
            *PARTITION_COLUMNS,
            (pl.int_range(pl.len()).over(PARTITION_COLUMNS) // per_file).alias("_piece"),
            maintain_order=True,
        )
        .agg(
            pl.col("_row").first().alias("_start"),
            pl.len().alias("_rows"),
            *[pl.col(c).min().alias(f"min.{c}") for c in STATS_COLUMNS],
            *[pl.col(c).max().alias(f"max.{c}") for c in STATS_COLUMNS],
            *[pl.col(c).null_count().alias(f"nulls.{c}") for c in STATS_COLUMNS],
        )
    )
    data = to_arrow(frame, {c: t for c, t in EVENT_COLUMNS.items() if c not in PARTITION_COLUMNS})
    stamp = int(datetime.now(UTC).timestamp() * 1000)

    def write(piece: dict[str, Any]) -> Any:
        values = {"event_date": piece["event_date"].isoformat(), "organization_id": piece["organization_id"]}
        relative = "/".join(f"{k}={v}" for k, v in values.items()) + f"/part-{uuid.uuid4().hex}.{codec}.parquet"
        buffer = io.BytesIO()
        small = piece["_rows"] <= SMALL_FILE_ROWS
        pq.write_table(
            data.slice(piece["_start"], piece["_rows"]),
            buffer,
            compression=codec,
            use_dictionary=not small,
            write_statistics=not small,
        )
        lake.write_data_file(lake.join(EVENTS, relative), buffer.getvalue())
        return AddAction(relative, buffer.tell(), values, stamp, data_change, file_stats(piece))

    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        return list(pool.map(write, pieces.iter_rows(named=True)))


def file_stats(piece: Mapping[str, Any]) -> str:
    """A data file's Delta statistics: its row count and the min, max and nulls of STATS_COLUMNS."""

    def text(value: Any) -> Any:
        return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value

    return json.dumps(
        {
            "numRecords": piece["_rows"],
            "minValues": {c: text(piece[f"min.{c}"]) for c in STATS_COLUMNS},
            "maxValues": {c: text(piece[f"max.{c}"]) for c in STATS_COLUMNS},
            "nullCount": {c: piece[f"nulls.{c}"] for c in STATS_COLUMNS},
        }
    )


def commit_event_files(table: Any, actions: list[Any], metadata: dict[str, str]) -> int:
    """Commit Add/Remove ``actions`` to the events table on exactly the version ``table`` was read
    at (CommitConflict if anyone committed since: never resolved against a newer version); the
    new version."""
    from deltalake import CommitProperties

    return commit_once(  # no retries: exactly the next version
        table,
        metadata,
        lambda: table.create_write_transaction(
            actions,
            mode="append",
            schema=table.schema(),
            partition_by=PARTITION_COLUMNS,
            commit_properties=CommitProperties(custom_metadata=metadata, max_commit_retries=0),
        ),
    )


# --- what is in the events table (metadata only) ------------------------------------------------


def add_actions(table: Any) -> pl.DataFrame:
    """The table's live data files as delta-rs lists them (path, size_bytes, num_records, partition.*)."""
    return pl.DataFrame(table.get_add_actions(flatten=True))  # Arrow C stream: no pyarrow needed


def live_files(table: Any) -> pl.DataFrame:
    """One row per live data file: path, size, rows, and its event_date / organization_id."""
    return add_actions(table).select(
        pl.col("path"),
        pl.col("size_bytes"),
        pl.col("num_records").fill_null(0).alias("rows"),
        pl.col("partition.event_date").cast(pl.String).str.to_date().alias("event_date"),
        pl.col("partition.organization_id").cast(pl.String).alias("organization_id"),
    )


def partition_row_counts(lake: Root, days: Iterable[date] | None = None) -> dict[tuple[date, str], int]:
    """Live rows per (event_date, organization_id), read from the table's metadata, not its data."""
    table = events_table(lake).open()
    return {} if table is None else row_counts(table, days)


def row_counts(table: Any, days: Iterable[date] | None = None) -> dict[tuple[date, str], int]:
    """:func:`partition_row_counts` of an open events table, at the version it was read at."""
    files = live_files(table)
    if days is not None:
        files = files.filter(pl.col("event_date").is_in(list(days)))
    counts = files.group_by("event_date", "organization_id").agg(pl.col("rows").sum())
    return {(d, o): int(n) for d, o, n in counts.iter_rows()}


def date_row_counts(table: Any) -> dict[date, int]:
    """Live rows per event_date of an open events table (metadata only)."""
    counts = live_files(table).group_by("event_date").agg(pl.col("rows").sum())
    return {d: int(n) for d, n in counts.iter_rows()}


def event_dates(lake: Root) -> list[date]:
    """The event dates that hold events, oldest first."""
    return sorted({d for d, _ in partition_row_counts(lake)})


def organizations(lake: Root, day: date) -> list[str]:
    """The organizations with events on ``day``."""
    return sorted(o for _, o in partition_row_counts(lake, [day]))


# --- reading events ---------------------------------------------------------------------------


def _partition_filter(day: date, organization_id: str | None = None) -> list[tuple[str, str, str]]:
    found = [("event_date", "=", day.isoformat())]
    if organization_id is not None:
        found.append(("organization_id", "=", organization_id))
    return found


_OPERATORS: dict[str, Any] = {
    "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
    "in": lambda c, v: c.is_in(v),
    "not in": lambda c, v: ~c.is_in(v),
}


def files_in(table: Any, filters: list[tuple[str, str, Any]] | None = None) -> pl.DataFrame:
    """The live files of the partitions ``filters`` select (DNF-free ``(column, op, value)`` list, values
    as text like delta-rs takes them): ``uri``, ``rows`` and one column per partition column."""
    actions = add_actions(table)
    partitions = {c.removeprefix("partition."): c for c in actions.columns if c.startswith("partition.")}
    keep = pl.lit(True)
    for column, op, value in filters or []:
        dtype = actions.schema[partitions[column]]
        text = pl.Series(list(value) if op.endswith("in") else [value], dtype=pl.String)
        typed = text.str.to_date() if dtype == pl.Date else text.cast(dtype)
        keep &= _OPERATORS[op](pl.col(partitions[column]), typed if op.endswith("in") else typed[0])
    base = table.table_uri.rstrip("/") + "/"
    uri = pl.lit(base) + pl.col("path")
    if "%" in base or actions["path"].str.contains("%", literal=True).any():
        # delta-rs percent-encodes both (a lake below "/srv/audit lake" is file:///srv/audit%20lake/...):
        # a file is read at the name it has
        uri = uri.map_elements(unquote, return_dtype=pl.String)
    return actions.filter(keep).select(
        uri.alias("uri"),
        pl.col("num_records").fill_null(0).alias("rows"),
        *(pl.col(full).alias(name) for name, full in partitions.items()),
    )


def read_files(
    lake: Root,
    files: pl.DataFrame,
    schema: Mapping[str, pl.DataType],
    columns: Sequence[str] | None = None,
    where: pl.Expr | None = None,
) -> pl.DataFrame:
    """The rows of ``files`` (a :func:`files_in` frame) in ``columns`` (default: all of ``schema``), read
    with polars file by file; partition values come from the log, columns a file lacks are null.
    ``where`` (on stored columns, wanted or not) is applied to each file as it is read: memory holds
    the matches only."""
    wanted = list(columns or schema)
    partitions = [c for c in files.columns if c not in ("uri", "rows")]
    filtered_on = where.meta.root_names() if where is not None else []
    stored = [c for c in dict.fromkeys([*wanted, *filtered_on]) if c not in partitions]
    empty = pl.DataFrame(schema={c: schema[c] for c in wanted})
    if lake.is_local and stored and files.height > 1:
        with contextlib.suppress(pl.exceptions.PolarsError):  # files of differing schemas: one by one below
            return pl.concat([empty, _scan_local(lake, files, {c: schema[c] for c in stored}, where).select(wanted)])
    frames = []
    for uri, rows, *values in files.select("uri", "rows", *partitions).iter_rows():
        source = local_path(uri) if lake.is_local else io.BytesIO(lake.read_bytes(uri))
        frame = _read_parquet(source, {c: schema[c] for c in stored}, where) if stored else pl.DataFrame(height=rows)
        frames.append(
            frame.with_columns(pl.lit(v, files.schema[c]).alias(c) for c, v in zip(partitions, values, strict=True))
        )
    return pl.concat([empty, *(f.select(wanted).cast(dict(empty.schema)) for f in frames)], how="vertical")


def _scan_local(
    lake: Root, files: pl.DataFrame, columns: Mapping[str, pl.DataType], where: pl.Expr | None
) -> pl.DataFrame:
    """Local ``files`` read as one streaming polars query (many small files: one pass, matches only),
    partition values joined on from the log by file."""
    located = files.with_columns(pl.col("uri").map_elements(local_path, pl.String).alias("_file"))
    scan = pl.scan_parquet(
        located["_file"].to_list(),
        schema=dict(columns),  # the table's types: a file that differs fails, and is read alone instead
        include_file_paths="_file",
        missing_columns="insert",
        extra_columns="ignore",
    )
    rows = (scan if where is None else scan.filter(where)).collect()
    return rows.join(located.drop("uri", "rows"), on="_file", how="left").drop("_file")


def _read_parquet(source: Any, columns: Mapping[str, pl.DataType], where: pl.Expr | None = None) -> pl.DataFrame:
    """``columns`` of one data file in the table's types, rows matching ``where``; a column the file
    lacks (an older file, after the schema gained it) is null, as a Delta reader must show it."""
    scan = pl.scan_parquet(source)
    present = set(scan.collect_schema().names())
    typed = scan.select(
        (pl.col(c) if c in present else pl.lit(None)).cast(dtype).alias(c) for c, dtype in columns.items()
    )
    return (typed if where is None else typed.filter(where)).collect()


def read_table(
    lake: Root,
    table: Any,
    schema: Mapping[str, pl.DataType],
    filters: list[tuple[str, str, Any]] | None = None,
    columns: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Rows of an open table in the partitions ``filters`` select (partition pruning), as polars.

    Reads the live files directly: pyarrow.dataset would import pandas (0.6 s a process) first.
    """
    return read_files(lake, files_in(table, filters), schema, columns)


def read_table_in_groups(
    lake: Root,
    table: Any,
    schema: Mapping[str, pl.DataType],
    filters: list[tuple[str, str, Any]],
    columns: Sequence[str],
    rows: int,
) -> Iterator[pl.DataFrame]:
    """:func:`read_table`, a group of whole files of about ``rows`` rows at a time (a bigger file
    alone): memory is bounded whatever a partition's size."""
    files = files_in(table, filters)
    start = pl.col("rows").cum_sum() - pl.col("rows")
    groups = files.with_columns((start // max(rows, 1)).alias("_group")).partition_by(
        "_group", maintain_order=True, include_key=False
    )
    for group in groups:
        yield read_files(lake, group, schema, columns)


def read_partition(lake: Root, day: date, organization_id: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """All events of one (date, organization), with organization_id (always) among the columns."""
    wanted = list(dict.fromkeys([*(columns or EVENT_COLUMNS), "organization_id"]))
    table = events_table(lake).open()
    if table is None:
        return pl.DataFrame(schema={c: EVENT_COLUMNS[c] for c in wanted})
    return read_table(lake, table, EVENT_COLUMNS, _partition_filter(day, organization_id), wanted)


def read_dates(
    lake: Root, table: Any, days: Iterable[date], columns: Sequence[str], event_ids: pl.Series | None = None
) -> pl.DataFrame:
    """Rows of the given event dates (every organization), optionally only these event_ids.

    With ``event_ids``, the event_id column alone finds the files that hold one; only those
    files' other columns are read (repeats are few, files many).
    """
    wanted = sorted(set(days))
    files = files_in(table, [("event_date", "in", [d.isoformat() for d in wanted])])
    if event_ids is None:
        return read_files(lake, files, EVENT_COLUMNS, columns)
    ids = event_ids.implode()
    holding = files.filter(pl.col("uri").is_in(files_holding(lake, files, ids)))
    return read_files(lake, holding, EVENT_COLUMNS, columns, where=pl.col("event_id").is_in(ids))


def files_holding(lake: Root, files: pl.DataFrame, ids: pl.Series) -> list[str]:
    """The uris of ``files`` that hold one of ``ids`` (an imploded list), reading event_id alone.

    Each file's uri rides along as a partition value would, so :func:`read_files` bounds the read
    as it does any other: matches only, whatever the number of files.
    """
    tagged = files.select("uri", "rows", pl.col("uri").alias("holding_file"))
    found = read_files(
        lake, tagged, {**EVENT_COLUMNS, "holding_file": pl.String()}, ["holding_file"], pl.col("event_id").is_in(ids)
    )
    return found["holding_file"].unique().to_list()


# --- dropping partitions (retention) -------------------------------------------------------------


def drop_partitions(table: Any, keys: Sequence[tuple[date, str]], metadata: dict[str, str]) -> int:
    """Delete whole (event_date, organization_id) partitions in one Delta delete read at ``table``'s
    version; the new version. CommitConflict if another writer added files to them since (an ingest,
    a compaction): rows the caller did not count and check are never dropped.

    The files stay readable to time travel until ``vacuum`` removes them after its retention.
    """
    from deltalake import CommitProperties

    by_day: dict[date, set[str]] = {}
    for day, org in keys:
        by_day.setdefault(day, set()).add(org)
    predicate = " OR ".join(
        f"(event_date = '{day.isoformat()}' AND organization_id IN ("
        + ", ".join("'" + o.replace("'", "''") + "'" for o in sorted(orgs))
        + "))"
        for day, orgs in sorted(by_day.items())
    )
    return commit_once(
        table, metadata, lambda: table.delete(predicate, commit_properties=CommitProperties(custom_metadata=metadata))
    )


def new_batch_id(now: datetime) -> str:
    """A sortable, unique batch id: ``YYYYMMDDTHHMMSSZ-<random>``."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


# --- small JSON state files --------------------------------------------------------------------


def write_json(root: Root, path: str, payload: Any) -> None:
    root.write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(root: Root, path: str) -> Any:
    return json.loads(root.read_bytes(path))
