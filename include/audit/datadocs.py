"""The validation site under ``<lake>/_validation/``: one self-contained page per run and an index.

Great Expectations renders each run's page (its Data Docs renderer), with our templates in front
of its own (web/datadocs/): styles inline, no CDN script or stylesheet, no remote logo, no
newsletter footer, every link inside the site. Compliance networks are often air-gapped: the pages
must read the same offline.

The index is kept per month of runs: a run adds one row to its month's list (``runs-YYYY-MM.json``)
and re-renders that month's page and ``index.html`` only. Its cost is bounded by one month of runs;
no past run's page is rendered again.
"""

from __future__ import annotations

import html
import json
import posixpath
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .lake import VALIDATION
from .storage import Root

TEMPLATES = Path(__file__).parent / "web" / "datadocs"
INDEX = "index.html"
MONTHS = "index.json"  # the months that have runs, newest first


@dataclass(frozen=True)
class IndexEntry:
    """One run in the index."""

    batch_id: str
    run_time: str
    success: bool
    evaluated: int
    failed: int
    failures: list[str]
    suite: str = ""
    asset: str = ""

    @classmethod
    def of(cls, batch_id: str, payload: dict[str, Any], failures: list[str]) -> IndexEntry:
        stats = payload.get("statistics") or {}
        meta = payload.get("meta") or {}
        run_time = str((meta.get("run_id") or {}).get("run_time") or "")
        asset = str((meta.get("active_batch_definition") or {}).get("data_asset_name") or "")
        return cls(
            batch_id,
            run_time,
            bool(payload.get("success")),
            int(stats.get("evaluated_expectations") or 0),
            int(stats.get("unsuccessful_expectations") or 0),
            failures,
            str(payload.get("suite_name") or ""),
            asset,
        )

    @property
    def month(self) -> str:
        return self.run_time[:7] or "unknown"


def is_site_file(name: str) -> bool:
    """Whether a file name under ``_validation/`` belongs to the site (index), not to one run."""
    return name.startswith(("index", "runs-"))


# --- one run's page ------------------------------------------------------------------------------


@cache
def _page_renderer() -> Any:
    """GE's validation page renderer without its link to a suite page this site does not have."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer

    class Renderer(ValidationResultsPageRenderer):
        @classmethod
        def _render_validation_header(cls, validation_results: Any) -> Any:
            header = super()._render_validation_header(validation_results)
            header.subheader.string_template["styling"]["params"].pop("expectation_suite_name", None)
            return header

    return Renderer()


@cache
def _page_view() -> Any:
    """GE's Jinja page view with our templates first (GE lists its own before custom ones)."""
    from great_expectations.render.view import DefaultJinjaPageView
    from jinja2 import ChoiceLoader, FileSystemLoader

    view = DefaultJinjaPageView()
    view.env.loader = ChoiceLoader([FileSystemLoader(str(TEMPLATES)), view.env.loader])
    return view


def render_page(result: Any) -> str:
    """The Data Docs page of one validation result, self-contained.

    GE 1.x records the data asset in ``active_batch_definition``, but its page renderer still reads
    ``batch_spec`` (else it prints "Data asset: None"), so the name is copied there first.
    """
    definition = result.meta.get("active_batch_definition") or {}
    asset = definition.get("data_asset_name") if isinstance(definition, dict) else definition.data_asset_name
    if asset:
        result.meta.setdefault("batch_spec", {})["data_asset_name"] = asset
    return _page_view().render(_page_renderer().render(result))


# --- the index -----------------------------------------------------------------------------------


def _read_json(lake: Root, path: str, default: Any) -> Any:
    return json.loads(lake.read_bytes(path)) if lake.exists(path) else default


def _month_page(month: str) -> str:
    return f"index-{month}.html"


def _row(entry: IndexEntry) -> str:
    outcome = "passed" if entry.success else "failed"
    detail = html.escape("; ".join(entry.failures)) if entry.failures else ""
    return (
        f'<tr><td><a href="{html.escape(entry.batch_id)}.html">{html.escape(entry.batch_id)}</a></td>'
        f'<td>{html.escape(entry.run_time)}</td><td class="{outcome}">{outcome}</td>'
        f"<td>{entry.evaluated - entry.failed} / {entry.evaluated}</td><td>{detail}</td></tr>"
    )


def render_index(month: str, entries: list[IndexEntry], months: list[str]) -> str:
    """The page listing ``month``'s runs, newest first, with links to every month's page."""
    styles = (TEMPLATES / "site.css").read_text()
    nav = " ".join(f'<a href="{_month_page(m)}">{m}</a>' if m != month else f"<strong>{m}</strong>" for m in months)
    rows = "\n".join(_row(e) for e in sorted(entries, key=lambda e: (e.run_time, e.batch_id), reverse=True))
    failed = sum(not e.success for e in entries)
    describe = ", ".join(sorted({f"{e.suite} on {e.asset}" for e in entries}))
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="UTF-8"><meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>Validation runs {month} · audit-log validation</title><link rel="icon" href="data:,">
<style>{styles}</style></head>
<body>
<nav class="site-nav"><a href="{INDEX}">All validation runs</a><span class="crumb">{month}</span></nav>
<div class="container-fluid">
<h1>Great Expectations validation runs</h1>
<p>One Great Expectations checkpoint run per ingest batch (run name = batch id); times are UTC.
Suite and data asset: {html.escape(describe)}.</p>
<p>Months: {nav}</p>
<p>{len(entries)} runs in {month}, {failed} failed.</p>
<table class="table index">
<thead><tr><th>Run (batch)</th><th>Run time</th><th>Result</th><th>Expectations met</th><th>Failures</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</div>
</body>
</html>
"""


def _write_month(lake: Root, month: str, runs: dict[str, dict], months: list[str]) -> None:
    """A month's rows and page, and ``index.html`` too when it is the newest month."""
    site = lake.join(VALIDATION)
    page = render_index(month, [IndexEntry(**e) for e in runs.values()], months).encode()
    lake.write_bytes(
        posixpath.join(site, f"runs-{month}.json"), (json.dumps(list(runs.values()), indent=1) + "\n").encode()
    )
    lake.write_bytes(posixpath.join(site, _month_page(month)), page)
    if month == months[0]:
        lake.write_bytes(posixpath.join(site, INDEX), page)


def _runs(lake: Root, month: str) -> dict[str, dict]:
    return {e["batch_id"]: e for e in _read_json(lake, lake.join(VALIDATION, f"runs-{month}.json"), [])}


def add_to_index(lake: Root, entry: IndexEntry) -> None:
    """Record ``entry`` in its month's list and re-render that month's page and ``index.html``.

    Idempotent: a batch validated again (a restarted ingest) replaces its row.
    """
    runs = _runs(lake, entry.month)
    runs[entry.batch_id] = asdict(entry)
    months = sorted(set(_read_json(lake, lake.join(VALIDATION, MONTHS), [])) | {entry.month}, reverse=True)
    _write_month(lake, entry.month, runs, months)
    lake.write_bytes(lake.join(VALIDATION, MONTHS), (json.dumps(months) + "\n").encode())


def forget(lake: Root, batch_ids: set[str]) -> None:
    """Drop the rows of batches whose pages were removed (a crashed batch, redone under a new id),
    so the index links only to pages that exist. Rare, so it may read every month's rows."""
    months = _read_json(lake, lake.join(VALIDATION, MONTHS), [])
    for month in months:
        runs = _runs(lake, month)
        if batch_ids & runs.keys():
            _write_month(lake, month, {b: e for b, e in runs.items() if b not in batch_ids}, months)
