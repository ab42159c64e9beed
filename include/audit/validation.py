"""Great Expectations re-checks every accepted batch with the suite generated from the rules.

Configured as Great Expectations means it: one expectation suite (``audit_events``), a data source
(``audit_lake``) with a named data asset (``accepted_events``), a validation definition and a
checkpoint (``audit_ingest``) run with the batch id as its run name. The pages and the index are
written by :mod:`.datadocs` under ``<lake>/_validation/``.

GE runs in a worker process of its own (:class:`Worker`), started when a run starts and fed each
batch's columns as an Arrow stream. The ingest process never imports GE (~320 MB and ~3 s), and
GE's pure-Python work no longer competes for one GIL with the parser thread: the two run on two
cores. GE has no polars engine, so the worker validates a pandas view of the columns the suite
needs.

GE's import (~2.5 s of CPU) is paid once per host, not once per run: the first run starts a
validation server (:func:`serve_forks`) that imports GE and then forks one worker per connecting
run, in milliseconds; it exits after ``AUDIT_VALIDATION_SERVER_IDLE_SECONDS`` (default 900) without
one (0: no server, every run starts its own worker). A 10-minute run of 7,000 events goes from
~3.4 to ~1.5 s (whole CLI processes). The server answers only its own user (its socket is in a folder only that user can open)
and only runs of the same code and libraries (the socket's name is their fingerprint).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import gc
import hashlib
import importlib.abc
import importlib.util
import json
import logging
import os
import pickle
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
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
SERVER_IDLE_ENV = "AUDIT_VALIDATION_SERVER_IDLE_SECONDS"
DEFAULT_SERVER_IDLE = 900
"""Seconds the validation server waits for a run before it exits: longer than the ingest DAG's
10-minute schedule, so each run finds it warm; 0 turns the server off."""
SERVER_START_SECONDS = 120
"""How long a run waits for a server it started to import GE and listen, before it starts a worker
of its own instead."""
HANDSHAKE_SECONDS = 10
"""How long a run waits for a server to fork its worker (milliseconds when it is well) before it
stops asking that server (a stopped or stuck one) and starts another."""
SERVER_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
"""What the server keeps of the environment of the run that starts it: no credentials outlive a run."""

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


class _Forked:
    """A worker the validation server forked for this process, reached over a Unix socket; it has
    the interface of the ``subprocess.Popen`` of a worker of this process's own (``pid``, ``stdin``,
    ``stdout``, ``poll``, ``wait``, ``kill``). It is not this process's child: its exit status is unknown."""

    def __init__(self, connection: socket.socket, pid: int) -> None:
        self.connection, self.pid = connection, pid
        self.stdin = connection.makefile("wb")
        self.stdout = connection.makefile("rb")

    def poll(self) -> int | None:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return -1
        except PermissionError:  # the pid was reused by another user's process
            return -1
        return None

    def wait(self, timeout: float | None = None) -> int:
        """Hang up (the worker exits at the end of its input) and wait until it has closed its end."""
        with contextlib.suppress(OSError):
            self.stdin.close()
            self.connection.shutdown(socket.SHUT_WR)
        self.connection.settimeout(timeout)
        try:
            while self.connection.recv(1 << 16):
                pass
        except TimeoutError:
            raise subprocess.TimeoutExpired(f"validation worker {self.pid}", timeout or 0) from None
        except OSError:
            pass  # reset: it is gone
        finally:
            self.stdout.close()
            self.connection.close()
        return -1

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)


def server_idle_seconds(environ: dict[str, str] | os._Environ = os.environ) -> float:
    """``AUDIT_VALIDATION_SERVER_IDLE_SECONDS`` (default 900; 0: no server). A value that is not a
    whole number of seconds turns the server off, with a warning, rather than stopping a run."""
    text = environ.get(SERVER_IDLE_ENV, "").strip()
    if not text:
        return DEFAULT_SERVER_IDLE
    if text.isascii() and text.isdigit():
        return int(text)
    log.warning("%s=%r is not a whole number of seconds; the validation server is off", SERVER_IDLE_ENV, text)
    return 0


def _fingerprint() -> str:
    """What the server runs: this Python, the project's code and the libraries GE uses. A server of
    other code (an upgrade, another checkout) has another socket and is never used."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(f"{sys.executable}\0{sys.version}\0{PROJECT_ROOT}".encode())
    for package in ("great_expectations", "pandas", "pyarrow", "polars", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            digest.update(f"\0{package}={version(package)}".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(b"\0" + source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def server_socket() -> str | None:
    """Where this code's validation server listens: in a folder of the temporary directory that only
    this user can open (made if absent); None if that folder is someone else's or others can open it."""
    folder = Path(tempfile.gettempdir()) / f"audit-ge-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError as exc:
        log.warning("no folder for the validation server (%s); each run starts its own worker", exc)
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        log.warning("%s is not a folder only this user can open; each run starts its own worker", folder)
        return None
    path = str(folder / f"{_fingerprint()}.sock")
    if len(path.encode()) >= 100:  # a Unix socket's path is short (108 bytes on Linux)
        log.info("the temporary directory's path is too long for the validation server's socket")
        return None
    return path


def _stderr_fds() -> list[int]:
    """This process's stderr (fd 2, whatever ``sys.stderr`` is), for the worker to write to; none if closed."""
    try:
        os.fstat(2)
    except OSError:
        return []
    return [2]


def _connect(path: str) -> _Forked | None:
    """A worker forked for this process by the server at ``path``; None if no server answers there."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(HANDSHAKE_SECONDS)
        connection.connect(path)
        stream = connection.makefile("rb")
        header = _read_frame(stream)  # the forked worker's pid: a live server answered
        stream.close()
        if header is None:
            raise EOFError("the server closed the connection")
        # only now our stderr, for the worker to write to: a descriptor sent to a server that never
        # accepts (stopped, stuck) would stay in flight and hold our stderr open after we exit
        socket.send_fds(connection, [b"\0"], _stderr_fds())
        connection.settimeout(None)
        return _Forked(connection, int(header))
    except (OSError, EOFError, ValueError):
        connection.close()
        return None


def _start_server(path: str, idle: float) -> subprocess.Popen[bytes]:
    """Start a validation server for ``path`` in a session of its own: it outlives this run (until
    idle), holds none of its files or pipes, and keeps only SERVER_ENV of its environment."""
    kept = {k: os.environ[k] for k in SERVER_ENV if k in os.environ}
    return subprocess.Popen(
        [sys.executable, "-c", f"from include.audit.validation import serve_forks; serve_forks({path!r}, {idle!r})"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
        env={**kept, "PYTHONPATH": _pythonpath(), "GX_ANALYTICS_ENABLED": "false", "OPENBLAS_NUM_THREADS": "1"},
    )


class Worker:
    """The Great Expectations process of this ingest process: started once, one batch at a time.

    Each request is a pickled ``(window, batch_id, catalog)`` frame followed by an Arrow IPC stream of the
    batch's columns (written batch by batch: no second copy of the batch in memory); the answer is
    one JSON frame, ``{"result": ..., "page": ...}`` or ``{"error": ...}``. The worker is forked by
    the validation server, or else is a child of this process; either way it exits when its input
    closes, so it never outlives the ingest process, however that one ends.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | _Forked | None = None
        self.server: subprocess.Popen[bytes] | None = None  # a server this process started
        self.lock = threading.Lock()

    def start(self, wait: bool = True) -> None:
        """Have a worker: from the validation server (started if none runs), or of this process.

        ``wait=False`` only starts the server, so GE is imported there while the first batch is read.
        """
        if self.process is not None and self.process.poll() is None:
            return
        idle = server_idle_seconds()
        path = server_socket() if idle > 0 else None
        if path is not None:
            self.process = _connect(path)
            if self.process is not None:
                return
            if self.server is None or self.server.poll() is not None:
                self.server = _start_server(path, idle)
            if not wait:
                return
            self.process = self._await_server(path)
            if self.process is not None:
                return
            log.warning("the validation server at %s did not answer; this run starts a worker of its own", path)
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from include.audit.validation import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": _pythonpath(), "GX_ANALYTICS_ENABLED": "false"},
        )

    def _await_server(self, path: str) -> _Forked | None:
        """A worker from the server this process started, once it listens (it imports GE first)."""
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if (forked := _connect(path)) is not None:
                return forked
            if self.server is not None and self.server.poll() is not None:
                return _connect(path)  # it exited: another server may have taken the socket
            time.sleep(0.05)
        return None

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
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)

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
    """Have a worker, or a validation server importing GE (~3 s) while the first batch is read."""
    WORKER.start(wait=False)


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


def _pythonpath() -> str:
    """PYTHONPATH for a worker or server: the project first (it imports ``include.audit``)."""
    return os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)


def _load_great_expectations() -> None:
    """Import GE as a worker runs it: few malloc arenas, warnings only, SciPy's statistics and Altair
    deferred; then its ~million long-lived objects go out of the collector's sight (and, in the
    server, stay shared with every forked worker)."""
    fewer_malloc_arenas()
    logging.basicConfig(level=logging.WARNING, format="validation worker: %(levelname)s %(name)s: %(message)s")
    sys.meta_path.insert(0, _DeferredImports(DEFERRED_IMPORTS))
    import great_expectations  # noqa: F401

    gc.freeze()


def answer_requests(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The worker's loop: answer requests (see :class:`Worker`) until the input closes."""
    import pyarrow as pa

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


def serve() -> None:
    """A worker of the ingest process: import GE, then answer on stdin and stdout.

    The protocol has the worker's stdout to itself; anything GE prints goes to stderr.
    """
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _load_great_expectations()
    answer_requests(sys.stdin.buffer, answers)


def _serve_connection(connection: socket.socket) -> None:
    """A forked worker: it tells the run its pid, takes the run's stderr (passed over the socket) for its
    own, then answers the run."""
    pid = str(os.getpid()).encode()
    connection.sendall(FRAME.pack(len(pid)) + pid)
    message, fds, _, _ = socket.recv_fds(connection, 1, 1)
    if not message:
        return  # the run went away before its first request
    for fd in fds:
        os.dup2(fd, 2)
        os.close(fd)
    os.dup2(2, 1)  # anything GE prints goes to the run's stderr, never into the protocol
    answer_requests(connection.makefile("rb"), connection.makefile("wb"))


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def serve_forks(path: str, idle: float) -> None:
    """The validation server: import GE once, listen at ``path``, and fork a worker for each run that
    connects; exit after ``idle`` seconds with neither a run connecting nor a worker alive.

    Nothing here but accepting, forking and reaping: the server itself never validates, starts no
    thread of its own, never runs polars (whose thread pool a fork would break) and never imports
    deltalake (whose runtime would break too). The libraries' background threads it has (jemalloc's,
    polars' spill cleaner) sleep; their allocator's locks are made safe by jemalloc's fork handlers.
    """
    _load_great_expectations()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps exited workers at once: no zombie looks alive
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(bound)
    listener.bind(bound)
    listener.listen(64)
    os.replace(bound, path)  # found only once it listens
    mine = os.stat(path).st_ino
    listener.settimeout(min(idle, 30.0))  # wakes up to reap workers and to check how long it has been idle
    workers: set[int] = set()
    last = time.monotonic()
    while True:
        try:
            connection: socket.socket | None = listener.accept()[0]
        except TimeoutError:
            connection = None
        except OSError as exc:  # out of file descriptors, say: the run falls back to a worker of its own
            log.warning("the validation server could not accept a run: %s", exc)
            connection = None
            time.sleep(0.1)
        workers = {pid for pid in workers if not _reaped(pid)}
        if connection is None:
            if workers:
                last = time.monotonic()
            elif time.monotonic() - last >= idle:
                break
            continue
        last = time.monotonic()
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: the run sees its connection close and falls back
            log.warning("the validation server could not fork a worker: %s", exc)
            connection.close()
            continue
        if pid == 0:  # the worker
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 1
            try:
                connection.settimeout(None)
                _serve_connection(connection)
                code = 0
            finally:
                os._exit(code)
        connection.close()
        workers.add(pid)
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == mine:
            os.unlink(path)


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
