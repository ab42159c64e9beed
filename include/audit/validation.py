"""Great Expectations re-checks every accepted batch with the suite generated from the rules.

Configured as Great Expectations means it: one expectation suite (``audit_events``), a data source
(``audit_lake``) with a named data asset (``accepted_events``), a validation definition and a
checkpoint (``audit_ingest``) run with the batch id as its run name. The pages and the index are
written by :mod:`.datadocs` under ``<lake>/_validation/``.

GE runs in a worker process of its own (:class:`Worker`), started when a run starts and fed each
batch's columns as an Arrow stream over a pipe. The ingest process never imports GE (~320 MB and
~3 s), and GE's pure-Python work no longer competes for one GIL with the parser thread: the two
run on two cores. GE has no polars engine, so the worker validates a pandas view of the columns
the suite needs.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import importlib.abc
import importlib.util
import json
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any

import polars as pl

from . import datadocs, events
from .events import LAKE_SCHEMA, RULES, Window, expectations
from .lake import VALIDATION, write_json
from .memory import fewer_malloc_arenas, release_memory
from .storage import Root

if TYPE_CHECKING:
    import pyarrow as pa

SUITE_NAME = "audit_events"
DATA_SOURCE = "audit_lake"
DATA_ASSET = "accepted_events"
BATCH_DEFINITION = "ingest_batch"
CHECKPOINT = "audit_ingest"
SENT_COLUMNS = [c for c in LAKE_SCHEMA if c not in ("ingested_at", "source_file")]
"""The event's own columns, what the worker receives; the suite picks the ones it checks."""
PROJECT_ROOT = Path(__file__).resolve().parents[2]
FRAME = struct.Struct(">Q")
DEFERRED_IMPORTS = frozenset({"scipy.stats", "altair"})
"""Modules GE imports with itself that this suite never runs: SciPy's distributions (for GE's
distributional expectations) and Altair (GE's charts; the pages here are our own). The worker
loads them on first use instead: its import takes ~1.5 s less CPU and ~80 MB less memory."""

# Great Expectations logs ~200 INFO lines while importing (its docs decorators); only warnings matter.
logging.getLogger("great_expectations").setLevel(logging.WARNING)
log = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """Rows that routing accepted broke the Great Expectations suite: a bug, never silent."""


class WorkerError(RuntimeError):
    """The validation worker failed or died: the batch is not committed, the next run redoes it."""


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    json_path: str
    html_path: str
    failures: list[str]


# --- the worker process ------------------------------------------------------------------------


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(FRAME.pack(len(data)) + data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """One length-prefixed message, or None at a clean end of stream."""
    size = stream.read(FRAME.size)
    if not size:
        return None
    if len(size) < FRAME.size:
        raise EOFError("the stream ended inside a message header")
    (length,) = FRAME.unpack(size)
    data = stream.read(length)
    if len(data) < length:
        raise EOFError("the stream ended inside a message")
    return data


class Worker:
    """The Great Expectations process of this ingest process: started once, one batch at a time.

    Each request is a pickled ``(window, batch_id, catalog)`` frame followed by an Arrow IPC stream of the
    batch's columns (written batch by batch: no second copy of the batch in memory); the answer is
    one JSON frame, ``{"result": ..., "page": ...}`` or ``{"error": ...}``. The worker exits when
    its input closes, so it never outlives the ingest process, however that one ends.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        """Start the process (it imports GE while the first batch is read); no-op if it runs."""
        if self.process is not None and self.process.poll() is None:
            return
        path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from include.audit.validation import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path, "GX_ANALYTICS_ENABLED": "false"},
        )

    def close(self) -> None:
        """Close the worker's input (it exits) and reap it."""
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.stdin.close()  # type: ignore[union-attr]
            process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()

    def _ask(self, frame: pl.DataFrame, window: Window, batch_id: str) -> dict[str, Any]:
        import pyarrow as pa

        self.start()
        assert self.process is not None and self.process.stdin and self.process.stdout
        table = frame.select(c for c in SENT_COLUMNS if c in frame.columns).to_arrow()
        plain = dataclasses.replace(window, field_bytes=dict(window.field_bytes))  # a read-only view does not pickle
        _write_frame(self.process.stdin, pickle.dumps((plain, batch_id, dict(events.ACTIONS))))
        with pa.ipc.new_stream(self.process.stdin, table.schema) as writer:
            for part in table.to_batches(max_chunksize=64 * 1024):
                writer.write_batch(part)
        self.process.stdin.flush()
        del table
        answer = _read_frame(self.process.stdout)
        if answer is None:
            raise EOFError("the worker closed its output")
        return json.loads(answer)

    def validate(self, frame: pl.DataFrame, window: Window, batch_id: str) -> tuple[dict[str, Any], str]:
        """GE's result (as JSON) and Data Docs page for ``frame``. A worker that died (killed, out of
        memory) is restarted once for the same batch."""
        with self.lock:
            for attempt in (1, 2):
                try:
                    answer = self._ask(frame, window, batch_id)
                    break
                except (OSError, EOFError, ValueError) as exc:
                    code = self.process.poll() if self.process else None
                    self.close()
                    if attempt == 2:
                        raise WorkerError(
                            f"the validation worker died on batch {batch_id} (exit {code}): {exc}"
                        ) from None
                    log.warning("the validation worker died (exit %s): %s; restarting it", code, exc)
        if "error" in answer:
            raise WorkerError(f"Great Expectations failed on batch {batch_id}: {answer['error']}")
        return answer["result"], answer["page"]


WORKER = Worker()
atexit.register(WORKER.close)


def warm_up() -> None:
    """Start the worker, so GE is imported (~3 s) there while the first batch is read."""
    WORKER.start()


def use_catalog(actions: dict[str, str]) -> None:
    """Build the suite from the catalog that routed the rows (the ingest process's), not from this
    process's own import of it: the two must never disagree."""
    events.ACTIONS = MappingProxyType(actions)
    events.ACTION_TYPES = tuple(dict.fromkeys(actions.values()))


class _DeferredImports(importlib.abc.MetaPathFinder):
    """Import the named modules lazily (``importlib.util.LazyLoader``): their code runs when one
    of their attributes is first used, so a module imported but never used costs nothing."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.names:
            return None
        for finder in sys.meta_path:
            found = (
                finder.find_spec(name, path, target) if finder is not self and hasattr(finder, "find_spec") else None
            )
            if found is not None:
                if hasattr(found.loader, "exec_module"):
                    found.loader = importlib.util.LazyLoader(found.loader)
                return found
        return None


def serve() -> None:
    """The worker's loop: import GE, then answer requests until the input closes.

    The protocol has the worker's stdout to itself; anything GE prints goes to stderr.
    """
    import pyarrow as pa

    fewer_malloc_arenas()
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    logging.basicConfig(level=logging.WARNING, format="validation worker: %(levelname)s %(name)s: %(message)s")
    sys.meta_path.insert(0, _DeferredImports(DEFERRED_IMPORTS))
    import great_expectations  # noqa: F401  (its ~million long-lived objects, then out of the collector's sight)

    gc.freeze()
    while (header := _read_frame(requests)) is not None:
        window, batch_id, catalog = pickle.loads(header)
        use_catalog(catalog)
        table = pa.ipc.open_stream(requests).read_all()
        result = None
        try:
            result = run_suite(table, window, batch_id)
            answer = {"result": result.to_json_dict(), "page": datadocs.render_page(result)}
        except Exception as exc:  # reported to the ingest process, which fails the batch
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        del table, result
        release_memory()  # GE's objects form cycles that hold the batch's frames until a full collection
        _write_frame(answers, json.dumps(answer, default=str).encode())


def _context() -> Any:
    """A fresh ephemeral GE context, one per batch: the context and the checkpoint's objects cost
    ~0.04 s, the checkpoint's run (~0.25 s a batch however small) is GE's own work, which a context
    kept for the run does not avoid (it saved ~0.04 s a batch, measured), while it keeps every
    result. The lake keeps the results and pages, not the context."""
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


def checkpoint(context: Any, checks: list[Any], result_format: str) -> Any:
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
        gx.Checkpoint(name=CHECKPOINT, validation_definitions=[definition], result_format=result_format)
    )


def run_name(batch_id: str) -> str:
    """The checkpoint's run name for a batch: ``batch <batch id>``."""
    return f"batch {batch_id}"


def run_suite(accepted: pa.Table, window: Window, batch_id: str) -> Any:
    """Validate ``accepted`` (lake-shaped rows, as the worker receives them) through the checkpoint,
    run name ``batch_id``; returns GE's validation result.

    GE's pandas view is built from the Arrow table directly, one chunk a column: ~0.02 s CPU at 150k
    rows against ~0.09 s through polars (measured, the stream's read included); the same dtypes.

    A batch is checked with GE's ``BASIC`` results (counts and the first unexpected values) and, only
    if it fails, again with ``SUMMARY`` (also each unexpected value's count, for its report). The
    verdict does not depend on the format, and a passing batch's page is the same with either;
    ``BASIC`` costs ~0.2 s less CPU a batch.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    checks = expectations(window, RULES)
    columns = sorted({e.column for e in checks if getattr(e, "column", None)})
    view = accepted.select(columns).combine_chunks().to_pandas()
    # GE's page renderer feeds the run name to dateutil: a bare batch id such as 20261126T120000Z-9941a10a
    # parses as a time with a 99-hour offset and fails the page; a leading word never parses.
    run_id = RunIdentifier(run_name=run_name(batch_id), run_time=datetime.now(UTC))
    for result_format in ("BASIC", "SUMMARY"):
        result = checkpoint(_context(), checks, result_format).run(batch_parameters={"dataframe": view}, run_id=run_id)
        (validation,) = result.run_results.values()
        if validation.success:
            break
        checks = expectations(window, RULES)  # an expectation belongs to one suite: the re-run makes its own
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
    """Run the checkpoint (in the worker); store its JSON result and Data Docs page under
    ``_validation/`` and add the run to the site's index."""
    payload, page = WORKER.validate(accepted, window, batch_id)
    json_path = lake.join(VALIDATION, f"{batch_id}.json")
    html_path = lake.join(VALIDATION, f"{batch_id}.html")
    write_json(lake, json_path, payload)
    lake.write_bytes(html_path, page.encode())
    report = ValidationReport(bool(payload.get("success")), json_path, html_path, failures(payload))
    datadocs.add_to_index(lake, datadocs.IndexEntry.of(batch_id, payload, report.failures))
    return report
