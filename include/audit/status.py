"""What is in the lake and the archive: counts for operators, the demo and the ``status`` command."""

from __future__ import annotations

from typing import Any

import polars as pl

from . import lake as lk
from . import quarantine
from .events import REASONS
from .storage import Root


def lake_status(lake_url: str, export_url: str) -> dict[str, Any]:
    """Events per date, quarantine per reason, the latest validation report, and the archived CSVs."""
    lake, exports = Root.open(lake_url), Root.open(export_url)
    per_date: dict[str, int] = {}
    for (day, _), rows in sorted(lk.partition_row_counts(lake).items()):
        per_date[day.isoformat()] = per_date.get(day.isoformat(), 0) + rows
    reasons = quarantine.read_all(lake).group_by("reason").len()
    counts = dict(zip(reasons["reason"].to_list(), reasons["len"].to_list()))
    reports = lake.find(lake.join(lk.VALIDATION), (".html",))
    csvs = []
    for path in exports.find(exports.path, (".csv",)):
        if "/_on-demand/" in path:
            continue
        rows = pl.read_csv(exports.read_bytes(path), infer_schema=False).height
        csvs.append({"path": exports.display(path), "rows": rows})
    return {
        "events": sum(per_date.values()),
        "events_per_date": per_date,
        "quarantined": {r: counts[r] for r in REASONS if r in counts},
        "validation_report": lake.display(reports[-1]) if reports else None,
        "exports": csvs,
    }
