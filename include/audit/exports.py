"""CSV exports: the daily per-organization archive and on-demand exports, in one format.

Format (a contract): header ``time,organization_id,user,action,action_type,resource,ip_address,
user_agent,region,event_id``; time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; rows sorted by time then
event_id; RFC 4180 quoting; UTF-8; cells that a spreadsheet would run as a formula get a ``'``.
The same lake rows always give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import polars as pl

from . import archive as ar
from . import lake as lk
from .config import RETENTION_DAYS
from .filters import Query, export_filter_for, load_export_filters
from .inputs import is_organization_id, validate_organization_id
from .query import ROW_COLUMNS, EventFilter, iter_days, rows
from .storage import SPOOL_BYTES, Root, error_line, pieces

log = logging.getLogger(__name__)

HEADER = ",".join(ROW_COLUMNS)
FORMULA_START = (
    r"^(?:[\s\x{200B}-\x{200D}\x{2060}\x{FEFF}]*[=+\-@\x{FF1D}\x{FF0B}\x{FF0D}\x{FF20}"
    r"\x{FE62}\x{FE63}\x{FE66}\x{FE6B}]|[\x00\t\r\n])"
)
"""A cell a spreadsheet could run as a formula (OWASP "CSV Injection", ASVS 5.0 1.2.10): one that starts
with = + - @ (or their fullwidth and small forms) after any leading whitespace (Unicode spaces such as
NBSP and U+3000, zero-width spaces, the BOM), or that starts with NUL, tab, CR or LF."""


def neutralize_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix ``'`` to text cells matching FORMULA_START; every other cell stays byte for byte."""
    return frame.with_columns(
        pl.when(pl.col(c).str.contains(FORMULA_START)).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c)
        for c, dtype in frame.schema.items()
        if dtype == pl.String
    )


def csv_body(frame: pl.DataFrame) -> bytes:
    """User-visible rows -> CSV lines without the header (written as bytes: no text copy to encode)."""
    out = io.BytesIO()
    neutralize_formulas(frame).write_csv(out, include_header=False, quote_style="necessary")
    return out.getvalue()


def csv_chunks(frames: Iterable[pl.DataFrame]) -> Iterator[bytes]:
    """The header, then each frame of lake rows as CSV (frames must come in time order)."""
    yield (HEADER + "\n").encode()
    for frame in frames:
        if frame.height:
            yield csv_body(rows(frame))


def daily_path(exports: Root, organization_id: str, day: date, version: int = 1) -> str:
    """Where version ``version`` of an organization's CSV for ``day`` lives."""
    return exports.join(ar.day_dir(exports, organization_id, day), ar.csv_name(organization_id, day, version))


@dataclass(frozen=True)
class ExportResult:
    organization_id: str
    date: str
    path: str
    rows: int
    bytes: int
    skipped: bool = False
    version: int = 1
    sha256: str = ""
    manifest: str | None = None


class ExportsFailed(RuntimeError):
    """Some organizations' exports failed (``failures``: organization -> error); the others were
    archived (``results``): one organization's broken archive or storage never stops the rest."""

    def __init__(self, results: list[ExportResult], failures: dict[str, str]) -> None:
        self.results, self.failures = results, failures
        super().__init__("; ".join(f"{org}: {error}" for org, error in failures.items()))


def is_stale(manifest: dict, live_rows: int) -> bool:
    """Events are only appended, so a version is stale iff the partition now has more rows than it was made from."""
    return live_rows > int(manifest.get("source_rows", 0))


def latest_manifest(exports: Root, day: date, organization_id: str) -> tuple[str, dict] | None:
    """The path and content of the day's highest-version manifest, or None."""
    paths = ar.list_org(exports, organization_id, ar.day_dir(exports, organization_id, day))
    found = ar.latest_manifest_paths(paths, organization_id).get(day)
    return (found, ar.read_entry(exports, found)) if found else None


def export_status(lake: Root, exports: Root, day: date, organization_id: str) -> str:
    """``current`` if the day's latest version covers every row of the partition, else ``missing``/``stale``."""
    latest = latest_manifest(exports, day, organization_id)
    if latest is None:
        return "missing"
    live = lk.partition_row_counts(lake, [day]).get((day, organization_id), 0)
    return "stale" if is_stale(latest[1], live) else "current"


def _result(exports: Root, manifest_path: str, manifest: dict, skipped: bool) -> ExportResult:
    csv_path = exports.join(manifest_path.rsplit("/", 1)[0], manifest["file"])
    return ExportResult(
        manifest["organization_id"],
        manifest["date"],
        exports.display(csv_path),
        manifest["rows"],
        manifest["bytes"],
        skipped,
        manifest["version"],
        manifest["sha256"],
        exports.display(manifest_path),
    )


def export_partition(
    lake: Root,
    exports: Root,
    day: date,
    organization_id: str,
    live_rows: int,
    query: Query | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> ExportResult:
    """Archive one organization's ``day``: a new version when the partition gained rows since the latest one.

    An unchanged day writes nothing and returns the existing version (also with ``force`` when the
    bytes come out the same). A day without events gets a header-only CSV: a heartbeat.
    """
    query = query or Query("")
    latest = latest_manifest(exports, day, organization_id)
    if latest and not force and not is_stale(latest[1], live_rows) and latest[1].get("filter", "") == query.text:
        return _result(exports, *latest, skipped=True)
    frame = lk.read_partition(lake, day, organization_id) if live_rows else pl.DataFrame()
    source_rows = frame.height
    if frame.height and query.terms:
        frame = query.apply(frame)
    times = rows(frame)["time"] if frame.height else pl.Series(dtype=pl.String)
    body = b"".join(csv_chunks([frame]))
    digest = ar.sha256_hex(body)
    if latest and latest[1]["sha256"] == digest and not is_stale(latest[1], source_rows):
        return _result(exports, *latest, skipped=True)
    version = (latest[1]["version"] + 1) if latest else 1
    while not exports.create_if_absent(daily_path(exports, organization_id, day, version), body):
        if ar.sha256_hex(exports.read_bytes(daily_path(exports, organization_id, day, version))) == digest:
            break  # these bytes are there already: a concurrent export of the same rows, or an earlier
            # try whose answer was lost or that stopped before its manifest, which is written below
        version += 1
    manifest_path = exports.join(
        ar.day_dir(exports, organization_id, day), ar.manifest_name(organization_id, day, version)
    )
    entry = {
        "kind": "export",
        "date": day.isoformat(),
        "version": version,
        "file": ar.csv_name(organization_id, day, version),
        "sha256": digest,
        "bytes": len(body),
        "rows": frame.height,
        "first_event_time": times[0] if len(times) else None,
        "last_event_time": times[-1] if len(times) else None,
        "supersedes": ar.csv_name(organization_id, day, version - 1) if version >= 2 else None,
        "source_rows": source_rows,
        "filter": query.text,
    }
    try:
        manifest = ar.append(exports, organization_id, manifest_path, entry, now)
    except FileExistsError:
        manifest = json.loads(exports.read_bytes(manifest_path))
        if manifest.get("sha256") != digest:  # not these bytes' manifest: never written over
            raise
        return _result(exports, manifest_path, manifest, skipped=True)  # a concurrent export of the same rows
    log.info("archived %s %s v%d: %d rows", organization_id, day, version, frame.height)
    return _result(exports, manifest_path, manifest, skipped=False)


def _archive_days(exports: Root, organization_id: str) -> dict[date, str]:
    """Per archived date of the organization, its latest manifest's path."""
    return ar.latest_manifest_paths(ar.list_org(exports, organization_id), organization_id)


def _begun_before(archived: dict[date, str], day: date) -> bool:
    """Whether an organization's archive (``_archive_days``) began before ``day``: then it gets ``day`` too."""
    return any(d < day for d in archived)


def _archived_organizations(exports: Root) -> list[str]:
    """Organizations with a folder in the archive (folder names that are not organization ids left out)."""
    return [org for org in ar.organizations(exports) if is_organization_id(org)]


def active_organizations(lake: Root, exports: Root, day: date, days: int = RETENTION_DAYS) -> list[str]:
    """Organizations that get an export of ``day``, a heartbeat when they had no events: those with
    events in the lake within the ``days`` before ``day`` (and on it), and those whose archive began
    before ``day``. An archive, once begun, gets every day, also after the organization's last events
    have left the retention window: a missing day always means a lost file (``verify``)."""
    start = day - timedelta(days=days)
    in_lake = {org for d, org in lk.partition_row_counts(lake) if start <= d <= day}
    archived = {
        org
        for org in _archived_organizations(exports)
        if org not in in_lake and _begun_before(_archive_days(exports, org), day)
    }
    return sorted(in_lake | archived)


def export_daily(
    lake_url: str,
    export_url: str,
    day: date,
    organizations: Iterable[str] | None = None,
    force: bool = False,
    filters_path: str | None = None,
    days: int = RETENTION_DAYS,
) -> list[ExportResult]:
    """Archive ``day`` for every organization active in the retention window (or the given ones);
    ExportsFailed, once all were tried, if any failed.

    Each organization's rows are those its query keeps in the filters file (``filters_path``, else
    $AUDIT_EXPORT_FILTERS; none: every event).
    """
    lake, exports = Root.open(lake_url), Root.open(export_url)
    orgs = (
        list(dict.fromkeys(organizations))
        if organizations is not None
        else active_organizations(lake, exports, day, days)
    )
    orgs = [validate_organization_id(org) for org in orgs]
    filters = load_export_filters(filters_path)
    counts = lk.partition_row_counts(lake, [day])
    results: list[ExportResult] = []
    failures: dict[str, str] = {}
    for org in orgs:
        try:
            results.append(
                export_partition(
                    lake, exports, day, org, counts.get((day, org), 0), export_filter_for(filters, org), force
                )
            )
        except Exception as exc:  # the next organization is archived all the same; the run then fails
            failures[org] = error_line(exc)
            log.error("export of %s for %s failed: %s", day, org, failures[org])
    if failures:
        raise ExportsFailed(results, failures)
    return results


def pending_exports(lake_url: str, export_url: str, day: date, days: int = RETENTION_DAYS) -> list[tuple[date, str]]:
    """What a daily run archives: ``day`` for every active organization (``active_organizations``),
    and every earlier (date, organization) in the window whose latest version is stale or that has no
    version at all."""
    lake, exports = Root.open(lake_url), Root.open(export_url)
    start = day - timedelta(days=days)
    counts = {key: rows for key, rows in lk.partition_row_counts(lake).items() if start <= key[0] <= day}
    in_lake = {org for _, org in counts}
    keys: set[tuple[date, str]] = set()
    for org in sorted(in_lake | set(_archived_organizations(exports))):
        try:
            keys.update(_behind(exports, org, day, start, counts, org in in_lake))
        except Exception as exc:  # its own export then fails, visibly; every other organization's goes on
            log.error("cannot read %s's archive: %s; its export of %s is tried as it is", org, error_line(exc), day)
            keys.add((day, org))
    return sorted(keys)


def _behind(
    exports: Root, org: str, day: date, start: date, counts: dict[tuple[date, str], int], has_events: bool
) -> set[tuple[date, str]]:
    """``org``'s days from ``start`` to ``day`` that a daily run archives: ``day``, and the missing or stale."""
    latest = _archive_days(exports, org)
    if not has_events and not _begun_before(latest, day):
        return set()  # neither events in the window nor an archive begun before ``day``
    keys: set[tuple[date, str]] = set()
    first = max(start, min([d for d, o in counts if o == org] + list(latest)))
    for offset in range((day - first).days + 1):
        when = first + timedelta(days=offset)
        live = counts.get((when, org), 0)
        if when == day or when not in latest or (live and is_stale(ar.read_entry(exports, latest[when]), live)):
            keys.add((when, org))
    return keys


def export_filtered(lake_url: str, flt: EventFilter, out_url: str, never_overwrite: bool = False) -> ExportResult:
    """On-demand export of one organization's filtered time range, streamed one day at a time.

    With ``never_overwrite`` (the archive's rule) an existing file is left alone: the same bytes
    return it, other bytes go to the next free ``.vN`` name.
    """
    lake, out = Root.open(lake_url), Root.open(out_url)
    counted = {"rows": 0}

    def frames() -> Iterator[pl.DataFrame]:
        for frame in iter_days(lake, flt):
            counted["rows"] += frame.height
            yield frame

    span = f"{flt.start.isoformat()}..{flt.end.isoformat()}"
    if not never_overwrite:
        size = out.write_chunks(out.path, csv_chunks(frames()))
        return ExportResult(flt.organization_id, span, out.display(out.path), counted["rows"], size)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        digest = hashlib.sha256()
        for chunk in csv_chunks(frames()):
            spool.write(chunk)
            digest.update(chunk)
        size, version = spool.tell(), 1
        while True:
            path = out.path if version == 1 else re.sub(r"(\.csv)?$", f".v{version}.csv", out.path, count=1)
            spool.seek(0)
            if out.create_chunks_if_absent(path, pieces(spool)):
                break
            if ar.sha256_hex(out.read_bytes(path)) == digest.hexdigest():
                break
            version += 1
    return ExportResult(
        flt.organization_id, span, out.display(path), counted["rows"], size, version=version, sha256=digest.hexdigest()
    )
