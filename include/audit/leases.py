"""A lease in object storage: one writer at a time on an s3:// lake, with no lock server.

The lease is a small JSON object. It is taken with a conditional create (``If-None-Match: *``),
kept alive by conditional overwrites (``If-Match: <ETag>``) every third of its TTL, and given
back with a conditional delete. A writer that finds it taken waits; if the object's ETag stays
the same for a whole TTL on the waiter's own clock, the holder is gone (crashed, partitioned)
and the waiter takes the lease over with ``If-Match`` on that ETag, so only one waiter wins.
The holder counts its lease valid only until its last successful renewal's start plus the TTL,
so holder and taker never overlap while clocks run at the same rate; no wall clocks are compared.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from .lake import LeaseHeld
from .storage import Root, StorageError

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 120.0
TTL_VARIABLE = "AUDIT_LEASE_TTL_SECONDS"


class LeaseLost(StorageError):
    """This writer can no longer prove it holds the lease: it must stop before writing more."""


def ttl_from_env() -> float:
    """The lease TTL: $AUDIT_LEASE_TTL_SECONDS, else 120 s (longer than any single S3 request may take)."""
    return float(os.environ.get(TTL_VARIABLE) or DEFAULT_TTL_SECONDS)


def lease_body(owner: str, ttl: float, renewal: int) -> bytes:
    """The lease object's content; the renewal counter makes every write's ETag new."""
    return json.dumps({"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "ttl_seconds": ttl,
                       "renewal": renewal, "written_at": datetime.now(UTC).isoformat()}).encode()


class ObjectLease:
    """Exclusive, expiring ownership of ``path`` in an object store; see the module docstring."""

    def __init__(self, root: Root, path: str, ttl: float, wait_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root, self.path, self.ttl, self.wait_seconds, self.clock = root, path, ttl, wait_seconds, clock
        self.owner = secrets.token_hex(16)
        self.renewal = 0
        self.etag: str | None = None
        self.valid_until = 0.0
        self.lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the holder's own writes, robust to a retried request whose first try landed ----------

    def _landed(self) -> str | None:
        """The current ETag if the lease object holds one of our writes (a retried request whose
        first try landed fails its precondition), else None."""
        try:
            etag = self.root.etag(self.path)
            body = json.loads(self.root.read_bytes(self.path))
        except (FileNotFoundError, ValueError):
            return None
        return etag if body.get("owner") == self.owner else None

    def _write(self, expected: str | None) -> bool:
        """Create the lease (``expected`` None) or overwrite the version ``expected``; True if ours now.

        Validity grows only on a confirmed write: one that landed unconfirmed may be older than this try.
        """
        started = self.clock()
        body = lease_body(self.owner, self.ttl, self.renewal)
        etag = (self.root.create_if_absent(self.path, body) if expected is None
                else self.root.replace_if(self.path, body, expected))
        if etag:
            self.valid_until = started + self.ttl
        self.etag = etag or self._landed()
        return self.etag is not None

    # --- taking, keeping and giving back ----------------------------------------------------

    def _holder_ttl(self, default: float) -> float:
        try:
            return float(json.loads(self.root.read_bytes(self.path)).get("ttl_seconds") or default)
        except (FileNotFoundError, ValueError):
            return default

    def acquire(self) -> None:
        """Take the lease, waiting up to ``wait_seconds`` for a live holder, or taking over a dead one's."""
        deadline = self.clock() + self.wait_seconds
        poll = min(1.0, self.ttl / 10)
        seen: tuple[str, float, float] | None = None  # (ETag, first seen at, holder's TTL)
        while not self._write(None):
            current = self.root.etag(self.path)
            if current is None:
                continue  # given back meanwhile: try to create it again
            if seen is None or seen[0] != current:
                seen = (current, self.clock(), self._holder_ttl(self.ttl))
            elif self.clock() - seen[1] >= seen[2]:
                if self._write(current):
                    log.warning("took over the lease %s: unchanged for %.0fs, its holder is gone",
                                self.root.display(self.path), seen[2])
                    break
                seen = None
                continue
            if self.clock() > deadline:
                raise LeaseHeld(f"another writer still holds {self.root.display(self.path)} "
                                f"after {self.wait_seconds:.0f}s")
            time.sleep(poll)
        self.root.fs.invalidate_cache()  # what the previous holder wrote is newer than any listing we cached
        self._thread = threading.Thread(target=self._keep_alive, name="lease-renewal", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        """Extend the lease by a TTL from now; LeaseLost if another writer has taken it."""
        with self._lock:
            if self.lost:
                raise LeaseLost(self.lost)
            self.renewal += 1
            if not self._write(self.etag):
                self.lost = f"lease {self.root.display(self.path)} was taken over by another writer"
                raise LeaseLost(self.lost)

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except LeaseLost:
                return
            except Exception as exc:  # unreachable store: keep trying; fence() refuses once it expires
                log.info("lease renewal failed, will retry: %s", type(exc).__name__)

    def fence(self) -> None:
        """Before a write: LeaseLost unless the lease is surely still ours for at least half a TTL."""
        if self.lost:
            raise LeaseLost(self.lost)
        if self.valid_until - self.clock() < self.ttl / 2:
            self.renew()

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours; an unreachable store just lets it expire."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        with self._lock:
            if self.lost or not self.etag:
                return
            try:
                self.root.delete_if(self.path, self.etag)
            except Exception as exc:
                log.info("could not give back the lease (it expires in %.0fs): %s", self.ttl, type(exc).__name__)
