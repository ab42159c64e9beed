"""Organization API keys for the Audit Logs API: created once, stored only as a salted hash.

A key reads ``alk_<key id>_<secret>``. The lake keeps ``_state/api-keys/<key id>.json`` with the
organization, the salt, the scrypt hash of the secret (never the secret itself) and an optional
expiry date; on a local lake the directory is 0700 and each record 0600. Checking a key looks its
record up by id and compares hashes in constant time; an unknown id costs the same scrypt work as
a known one, so answer times do not tell which ids exist. ``KeyVerifier`` adds what a server
needs: a short cache of verified keys (scrypt is slow on purpose) and a limit on failed attempts
per key id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, date, datetime

from . import lake as lk
from .inputs import BadInput, day_end, validate_organization_id
from .storage import Root

PREFIX = "alk"
_KEY = re.compile(rf"^{PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{20,128}})$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_DECOY_SALT = secrets.token_bytes(16)  # hashed against for unknown ids: same work, never a match

CACHE_SECONDS = 30.0
"""How long a verified key is trusted without scrypt again; each use still checks that its record exists
(one stat or HEAD), so a revocation applies at once."""
MAX_FAILURES = 10
FAILURE_WINDOW_SECONDS = 60.0
"""More than MAX_FAILURES wrong secrets for one key id within the window: 429 until the window passes."""
_MAX_TRACKED = 10_000  # cache and failure entries kept, oldest evicted first: memory stays bounded


@dataclass(frozen=True)
class CreatedKey:
    """A new key: ``key`` is shown once to its creator and stored nowhere."""

    key_id: str
    organization_id: str
    key: str


class TooManyAttempts(Exception):
    """Too many failed attempts for one key id: retry after ``retry_after`` seconds (HTTP 429)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed attempts for this API key: retry in {retry_after:.0f} s")
        self.retry_after = retry_after


def keys_dir(lake: Root) -> str:
    return lake.join(lk.STATE, "api-keys")


def _record_path(lake: Root, key_id: str) -> str:
    return lake.join(keys_dir(lake), f"{key_id}.json")


def hash_secret(secret: str, salt: bytes) -> str:
    """scrypt of ``secret`` with ``salt``, hex: slow on purpose, so a stolen record resists guessing."""
    return hashlib.scrypt(secret.encode(), salt=salt, maxmem=64 << 20, **_SCRYPT).hex()


def _write_record(lake: Root, record: dict) -> None:
    """Store a key record; on a local lake only its owner may read the directory (0700) and file (0600)."""
    path = _record_path(lake, record["key_id"])
    if lake.is_local:
        directory = keys_dir(lake)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    lk.write_json(lake, path, record)
    if lake.is_local:
        os.chmod(path, 0o600)


def create_key(
    lake_url: str, organization_id: str, now: datetime | None = None, expires: date | None = None
) -> CreatedKey:
    """Make a key for ``organization_id`` and store its salted hash; ``expires``: last UTC day it works."""
    lake = Root.open(lake_url)
    validate_organization_id(organization_id)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if expires is not None and day_end(expires) <= now:
        raise BadInput(f"--expires {expires.isoformat()} is in the past: the key would never work")
    key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_bytes(16)
    _write_record(
        lake,
        {
            "key_id": key_id,
            "organization_id": organization_id,
            "salt": salt.hex(),
            "scrypt": hash_secret(secret, salt),
            "created_at": now.isoformat(),
            "expires_at": day_end(expires).isoformat() if expires else None,
        },
    )
    return CreatedKey(key_id, organization_id, f"{PREFIX}_{key_id}_{secret}")


def list_keys(lake_url: str) -> list[dict]:
    """Every key's id, organization, creation and expiry time, oldest first; never salts or hashes."""
    lake = Root.open(lake_url)
    shown = ("key_id", "organization_id", "created_at", "expires_at")
    records = [lk.read_json(lake, p) for p in lake.find(keys_dir(lake), (".json",))]
    return sorted(({k: r.get(k) for k in shown} for r in records), key=lambda r: (r["created_at"] or "", r["key_id"]))


def revoke_key(lake_url: str, key_id: str) -> dict:
    """Delete a key's record, so the key stops working (within CACHE_SECONDS on running servers)."""
    lake = Root.open(lake_url)
    if not _KEY_ID.fullmatch(key_id or ""):
        raise BadInput(f"invalid key id {key_id[:40]!r}: 16 hex digits, as `api-key list` shows")
    path = _record_path(lake, key_id)
    if not lake.exists(path):
        raise BadInput(f"no API key with id {key_id}")
    organization = lk.read_json(lake, path).get("organization_id")
    lake.remove(path)
    return {"key_id": key_id, "organization_id": organization, "revoked": True}


def _expired(record: dict, now: datetime) -> bool:
    expires = record.get("expires_at")
    return bool(expires) and datetime.fromisoformat(expires) <= now


def _read_record(lake: Root, key_id: str) -> dict | None:
    try:
        return lk.read_json(lake, _record_path(lake, key_id))
    except FileNotFoundError:  # no such key, or revoked meanwhile
        return None


def _organization(record: dict | None, secret: str, now: datetime) -> str | None:
    """The record's organization if ``secret`` matches it and it has not expired; scrypt work either way."""
    if record is None:  # the same scrypt work as a known id: no timing oracle for which ids exist
        hmac.compare_digest(hash_secret(secret, _DECOY_SALT), "0" * 64)
        return None
    actual = hash_secret(secret, bytes.fromhex(record.get("salt", "")))
    if not hmac.compare_digest(actual, record.get("scrypt", "")) or _expired(record, now):
        return None
    return record.get("organization_id")


def organization_for(lake: Root, key: str | None, now: datetime | None = None) -> str | None:
    """The organization ``key`` belongs to, or None when it is malformed, unknown, wrong or expired."""
    found = _KEY.fullmatch((key or "").strip())
    if not found:
        return None
    key_id, secret = found.groups()
    return _organization(_read_record(lake, key_id), secret, now or datetime.now(UTC))


class KeyVerifier:
    """``organization_for`` for a server: verified keys cached briefly, failed attempts limited per key id.

    A cached key is still refused once its record is gone (revoked) or it has expired.

    Thread-safe (the api-server verifies in its thread pool); memory is bounded by _MAX_TRACKED.
    """

    def __init__(
        self,
        cache_seconds: float = CACHE_SECONDS,
        max_failures: int = MAX_FAILURES,
        window_seconds: float = FAILURE_WINDOW_SECONDS,
    ) -> None:
        self.cache_seconds, self.max_failures, self.window_seconds = cache_seconds, max_failures, window_seconds
        self._verified: OrderedDict[bytes, tuple[str, float, datetime | None]] = OrderedDict()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def organization_for(self, lake: Root, key: str | None) -> str | None:
        """The key's organization, or None; TooManyAttempts while its id is locked out."""
        found = _KEY.fullmatch((key or "").strip())
        if not found:
            return None
        key_id = found.group(1)
        digest = hashlib.sha256(found.group(0).encode()).digest()
        now = time.monotonic()
        with self._lock:
            cached = self._verified.get(digest)
            fresh = cached is not None and cached[1] > now
            if not fresh:
                self._check_failures(key_id, now)
        if fresh:
            return self._still_valid(lake, key_id, digest, cached)
        record = _read_record(lake, key_id)
        organization = _organization(record, found.group(2), datetime.now(UTC))
        with self._lock:
            if organization is None:
                self._remember(self._failures, key_id, self._failures.get(key_id) or deque()).append(now)
            else:
                expires = record.get("expires_at") if record else None
                self._remember(
                    self._verified,
                    digest,
                    (organization, now + self.cache_seconds, datetime.fromisoformat(expires) if expires else None),
                )
                self._failures.pop(key_id, None)
        return organization

    def _still_valid(
        self, lake: Root, key_id: str, digest: bytes, cached: tuple[str, float, datetime | None]
    ) -> str | None:
        """A cached key's organization while its record exists (not revoked) and it has not expired."""
        organization, _, expires = cached
        if lake.exists(_record_path(lake, key_id)) and not (expires and expires <= datetime.now(UTC)):
            return organization
        with self._lock:
            self._verified.pop(digest, None)
        return None

    def _check_failures(self, key_id: str, now: float) -> None:
        failures = self._failures.get(key_id)
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        if failures and len(failures) >= self.max_failures:
            raise TooManyAttempts(failures[0] + self.window_seconds - now)

    @staticmethod
    def _remember(table: OrderedDict, key: object, value: object) -> object:
        table[key] = value
        table.move_to_end(key)
        while len(table) > _MAX_TRACKED:
            table.popitem(last=False)
        return value
