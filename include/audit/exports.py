"""CSV exports: the daily per-organization archive and on-demand exports, in one format.

Format (a contract): header ``time,organization_id,user,action,action_type,resource,ip_address,
user_agent,region,event_id``; time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; rows sorted by time then
event_id; RFC 4180 quoting; UTF-8; cells that a spreadsheet would run as a formula get a ``'``.
The same lake rows always give the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Iterable, Iterator

import polars as pl

from . import lake as lk
from .filters import Query, export_filter_for, load_export_filters
from .inputs import validate_organization_id
from .query import ROW_COLUMNS, EventFilter, iter_days, rows
from .storage import Root

log = logging.getLogger(__name__)

HEADER = ",".join(ROW_COLUMNS)
FORMULA_START = (r"^(?:[\s\x{200B}-\x{200D}\x{2060}\x{FEFF}]*[=+\-@\x{FF1D}\x{FF0B}\x{FF0D}\x{FF20}"
                 r"\x{FE62}\x{FE63}\x{FE66}\x{FE6B}]|[\x00\t\r\n])")
"""A cell a spreadsheet could run as a formula (OWASP "CSV Injection", ASVS 5.0 1.2.10): one that starts
with = + - @ (or their fullwidth and small forms) after any leading whitespace (Unicode spaces such as
NBSP and U+3000, zero-width spaces, the BOM), or that starts with NUL, tab, CR or LF."""


def neutralize_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix ``'`` to text cells matching FORMULA_START; every other cell stays byte for byte."""
    return frame.with_columns(
        pl.when(pl.col(c).str.contains(FORMULA_START)).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c)
        for c, dtype in frame.schema.items() if dtype == pl.String
    )


def csv_body(frame: pl.DataFrame) -> bytes:
    """User-visible rows -> CSV lines without the header."""
    return neutralize_formulas(frame).write_csv(include_header=False, quote_style="necessary").encode()


def csv_chunks(frames: Iterable[pl.DataFrame]) -> Iterator[bytes]:
    """The header, then each frame of lake rows as CSV (frames must come in time order)."""
    yield (HEADER + "\n").encode()
    for frame in frames:
        if frame.height:
            yield csv_body(rows(frame))


def daily_path(exports: Root, organization_id: str, day: date) -> str:
    return exports.join(organization_id, f"{day:%Y}", f"{day:%m}", f"{day:%d}",
                        f"audit-log_{organization_id}_{day.isoformat()}.csv")


@dataclass(frozen=True)
class ExportResult:
    organization_id: str
    date: str
    path: str
    rows: int
    bytes: int
    skipped: bool = False


def export_status(lake: Root, exports: Root, day: date, organization_id: str) -> str:
    """``current`` if the day's CSV exists and covers every file of the partition, else ``missing``/``stale``."""
    return _export_record(lake, exports, day, organization_id)[0]


def export_record_path(lake: Root, day: date, organization_id: str) -> str:
    return lake.join(lk.STATE, "exports", f"event_date={day.isoformat()}", f"organization_id={organization_id}.json")


def _export_record(lake: Root, exports: Root, day: date, organization_id: str) -> tuple[str, dict | None]:
    """The day's export status and its record (None when missing): stale when the partition has more rows now."""
    record_path = export_record_path(lake, day, organization_id)
    if not lake.exists(record_path) or not exports.exists(daily_path(exports, organization_id, day)):
        return "missing", None
    record = lk.read_json(lake, record_path)
    rows = lk.partition_row_counts(lake, [day]).get((day, organization_id), 0)
    return ("current" if rows <= record.get("source_rows", -1) else "stale"), record


def export_partition(lake: Root, exports: Root, day: date, organization_id: str,
                     now: datetime | None = None, query: Query | None = None) -> ExportResult:
    """Write one organization's CSV for ``day`` from its partition (rows ``query`` keeps), and record it."""
    path = daily_path(exports, organization_id, day)
    frame = lk.read_partition(lake, day, organization_id)
    source_rows = frame.height
    if query is not None:
        frame = query.apply(frame)
    body = b"".join(csv_chunks([frame]))
    exports.write_bytes(path, body)
    lk.write_json(lake, export_record_path(lake, day, organization_id), {
        "organization_id": organization_id,
        "event_date": day.isoformat(),
        "csv": exports.display(path),
        "rows": frame.height,
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "source_rows": source_rows,
        "exported_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(),
        "query": query.text if query is not None else "",
    })
    return ExportResult(organization_id, day.isoformat(), exports.display(path), frame.height, len(body))


def export_daily(lake_url: str, export_url: str, day: date, organizations: Iterable[str] | None = None,
                 force: bool = False, filters_path: str | None = None) -> list[ExportResult]:
    """Export ``day`` for every organization with events that day (or the given ones).

    Each organization's rows are those its query keeps in the filters file (``filters_path``, else
    $AUDIT_EXPORT_FILTERS; none: every event). Partitions whose CSV is already current under the
    same query are skipped unless ``force``: the bytes would be the same.
    """
    lake, exports = Root.open(lake_url), Root.open(export_url)
    orgs = list(organizations) if organizations is not None else lk.organizations(lake, day)
    filters = load_export_filters(filters_path)
    results = []
    for org in orgs:
        validate_organization_id(org)
        query = export_filter_for(filters, org)
        status, record = _export_record(lake, exports, day, org)
        if not force and status == "current" and record and record.get("query", "") == query.text:
            results.append(ExportResult(org, day.isoformat(), record["csv"], record["rows"], record["bytes"], True))
            continue
        results.append(export_partition(lake, exports, day, org, query=query))
        log.info("exported %s %s: %d rows -> %s", org, day, results[-1].rows, results[-1].path)
    return results


def export_filtered(lake_url: str, flt: EventFilter, out_url: str) -> ExportResult:
    """On-demand export of one organization's filtered time range, streamed one day at a time."""
    lake, out = Root.open(lake_url), Root.open(out_url)
    counted = {"rows": 0}

    def frames() -> Iterator[pl.DataFrame]:
        for frame in iter_days(lake, flt):
            counted["rows"] += frame.height
            yield frame

    size = out.write_chunks(out.path, csv_chunks(frames()))
    return ExportResult(flt.organization_id, f"{flt.start.isoformat()}..{flt.end.isoformat()}",
                        out.display(out.path), counted["rows"], size)
