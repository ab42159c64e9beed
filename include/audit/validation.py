"""Great Expectations re-checks every accepted batch with the suite generated from the rules.

Great Expectations has no polars engine, so it validates an Arrow-backed pandas view of the
columns the suite needs. It is imported lazily: the import alone costs seconds.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import polars as pl

from .events import RULES, Window, expectations
from .lake import VALIDATION, write_json
from .storage import Root

SUITE_NAME = "audit_events"


class ValidationFailed(RuntimeError):
    """Rows that routing accepted broke the Great Expectations suite: a bug, never silent."""


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    json_path: str
    html_path: str
    failures: list[str]


def warm_up() -> None:
    """Start importing Great Expectations (~3 s) in the background, while the first batch is parsed."""
    threading.Thread(target=importlib.import_module, args=("great_expectations",), name="gx-import",
                     daemon=True).start()


def _context() -> Any:
    """A fresh ephemeral GE context. One per batch: a context kept for the whole run holds on to
    every batch it validated (peak 2.6 vs 1.5 GB at 5M events), for ~0.3 s saved per batch."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.execution_engine import pandas_execution_engine

    # GE fingerprints every in-memory frame under 1 GB by hashing each cell: a batch-id marker
    # only, yet it took 24 of 56 s at 1M events (profile in bench/README.md). We opt out.
    pandas_execution_engine.HASH_THRESHOLD = 0

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}  # type: ignore[assignment]
    return context


def run_suite(accepted: pl.DataFrame, window: Window, batch_id: str) -> Any:
    """Validate ``accepted`` (lake-shaped rows) with the generated suite; returns GE's result."""
    import great_expectations as gx

    context = _context()
    asset = context.data_sources.add_pandas(f"audit_lake_{batch_id}").add_dataframe_asset(batch_id)
    batch = asset.add_batch_definition_whole_dataframe("accepted")
    checks = expectations(window, RULES)
    suite = context.suites.add(gx.ExpectationSuite(name=f"{SUITE_NAME}_{batch_id}", expectations=checks))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{SUITE_NAME}_{batch_id}", data=batch, suite=suite)
    )
    view = accepted.select(sorted({e.column for e in checks if getattr(e, "column", None)})).to_pandas(use_pyarrow_extension_array=True)
    return definition.run(batch_parameters={"dataframe": view}, result_format="SUMMARY")


def render_html(result: Any) -> str:
    """The Data Docs page for one validation result, as GE's own site would render it."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))


def failures(result_json: dict) -> list[str]:
    """One line per failed expectation: its type, column and a few unexpected values."""
    out = []
    for r in result_json.get("results", []):
        if r.get("success"):
            continue
        config = r.get("expectation_config", {})
        kwargs = config.get("kwargs", {})
        sample = (r.get("result") or {}).get("partial_unexpected_list") or []
        out.append(f"{config.get('type')}({kwargs.get('column', '')}): unexpected {sample[:3]!r}")
    return out


def validate_batch(lake: Root, accepted: pl.DataFrame, window: Window, batch_id: str) -> ValidationReport:
    """Run the suite, store its JSON result and Data Docs page under ``_validation/``."""
    result = run_suite(accepted, window, batch_id)
    payload = result.to_json_dict()
    gc.collect()  # GE's objects form cycles that hold the batch's frames until a full collection
    json_path = lake.join(VALIDATION, f"{batch_id}.json")
    html_path = lake.join(VALIDATION, f"{batch_id}.html")
    write_json(lake, json_path, payload)
    lake.write_bytes(html_path, render_html(result).encode())
    return ValidationReport(bool(payload.get("success")), json_path, html_path, failures(payload))
