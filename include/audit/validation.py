"""Great Expectations re-checks every accepted batch with the suite generated from the rules.

Configured as Great Expectations means it: one expectation suite (``audit_events``), a data source
(``audit_lake``) with a named data asset (``accepted_events``), a validation definition and a
checkpoint (``audit_ingest``) run with the batch id as its run name. The pages and the index are
written by :mod:`.datadocs` under ``<lake>/_validation/``.

Great Expectations has no polars engine, so it validates an Arrow-backed pandas view of the
columns the suite needs. It is imported lazily: the import alone costs seconds.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from . import datadocs
from .events import RULES, Window, expectations
from .lake import VALIDATION, write_json
from .storage import Root

SUITE_NAME = "audit_events"
DATA_SOURCE = "audit_lake"
DATA_ASSET = "accepted_events"
BATCH_DEFINITION = "ingest_batch"
CHECKPOINT = "audit_ingest"

# Great Expectations logs ~200 INFO lines while importing (its docs decorators); only warnings matter.
logging.getLogger("great_expectations").setLevel(logging.WARNING)


class ValidationFailed(RuntimeError):
    """Rows that routing accepted broke the Great Expectations suite: a bug, never silent."""


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    json_path: str
    html_path: str
    failures: list[str]


_importing: list[threading.Thread] = []  # the background import, if one was started


def warm_up() -> None:
    """Start importing Great Expectations (~3 s) in the background, while the first batch is parsed."""
    thread = threading.Thread(
        target=importlib.import_module, args=("great_expectations",), name="gx-import", daemon=True
    )
    _importing.append(thread)
    thread.start()


def _imported() -> None:
    """Wait for the background import: importing GE from two threads at once fails on its import cycles."""
    while _importing:
        _importing.pop().join()
    _freeze_imports()


def _freeze_imports() -> None:
    """Once GE is imported, move its ~million long-lived objects out of the collector's sight
    (``gc.freeze``): the full collection after each batch then costs milliseconds, not ~0.4 s."""
    if "great_expectations" in sys.modules and not gc.get_freeze_count():
        gc.freeze()


def _context() -> Any:
    """A fresh ephemeral GE context. One per batch (a constant cost, whatever the number of runs): a
    context kept for the whole run holds on to every batch it validated (peak 2.6 vs 1.5 GB at 5M
    events), for ~0.3 s saved per batch. The lake keeps the results and pages, not the context."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.execution_engine import pandas_execution_engine

    # GE fingerprints every in-memory frame under 1 GB by hashing each cell: a batch-id marker
    # only, yet it took 24 of 56 s at 1M events (profile in bench/README.md). We opt out.
    pandas_execution_engine.HASH_THRESHOLD = 0

    # This module sets its own logger to INFO at import (one line per context); only warnings matter.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}  # type: ignore[assignment]
    return context


def checkpoint(context: Any, checks: list[Any]) -> Any:
    """The ``audit_ingest`` checkpoint: suite ``audit_events`` on data asset ``accepted_events``."""
    import great_expectations as gx

    batch = (
        context.data_sources.add_pandas(DATA_SOURCE)
        .add_dataframe_asset(DATA_ASSET)
        .add_batch_definition_whole_dataframe(BATCH_DEFINITION)
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME, expectations=checks))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{SUITE_NAME}_on_{DATA_ASSET}", data=batch, suite=suite)
    )
    return context.checkpoints.add(
        gx.Checkpoint(name=CHECKPOINT, validation_definitions=[definition], result_format="SUMMARY")
    )


def run_name(batch_id: str) -> str:
    """The checkpoint's run name for a batch: ``batch <batch id>``."""
    return f"batch {batch_id}"


def run_suite(accepted: pl.DataFrame, window: Window, batch_id: str) -> Any:
    """Validate ``accepted`` (lake-shaped rows) through the checkpoint, run name ``batch_id``;
    returns GE's validation result."""
    _imported()  # before this thread imports anything of GE
    from great_expectations.core.run_identifier import RunIdentifier

    checks = expectations(window, RULES)
    columns = sorted({e.column for e in checks if getattr(e, "column", None)})
    view = accepted.select(columns).to_pandas()
    # GE's page renderer feeds the run name to dateutil: a bare batch id such as 20261126T120000Z-9941a10a
    # parses as a time with a 99-hour offset and fails the page; a leading word never parses.
    run_id = RunIdentifier(run_name=run_name(batch_id), run_time=datetime.now(UTC))
    result = checkpoint(_context(), checks).run(batch_parameters={"dataframe": view}, run_id=run_id)
    (validation,) = result.run_results.values()
    return validation


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
    """Run the checkpoint; store its JSON result and Data Docs page under ``_validation/`` and add
    the run to the site's index."""
    result = run_suite(accepted, window, batch_id)
    payload = result.to_json_dict()
    json_path = lake.join(VALIDATION, f"{batch_id}.json")
    html_path = lake.join(VALIDATION, f"{batch_id}.html")
    write_json(lake, json_path, payload)
    lake.write_bytes(html_path, datadocs.render_page(result).encode())
    del result
    gc.collect()  # GE's objects form cycles that hold the batch's frames until a full collection
    report = ValidationReport(bool(payload.get("success")), json_path, html_path, failures(payload))
    datadocs.add_to_index(lake, datadocs.IndexEntry.of(batch_id, payload, report.failures))
    return report
