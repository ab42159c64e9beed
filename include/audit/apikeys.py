"""Organization API keys for the Audit Logs API: created once, stored only as a salted hash.

A key reads ``alk_<key id>_<secret>``. The lake keeps ``_state/api-keys/<key id>.json`` with the
organization, the salt and the scrypt hash of the secret, never the secret itself; checking a
key looks its record up by id and compares hashes in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from . import lake as lk
from .query import validate_organization_id
from .storage import Root

PREFIX = "alk"
_KEY = re.compile(rf"^{PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{20,128}})$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True)
class CreatedKey:
    """A new key: ``key`` is shown once to its creator and stored nowhere."""

    key_id: str
    organization_id: str
    key: str


def keys_dir(lake: Root) -> str:
    return lake.join(lk.STATE, "api-keys")


def _record_path(lake: Root, key_id: str) -> str:
    return lake.join(keys_dir(lake), f"{key_id}.json")


def hash_secret(secret: str, salt: bytes) -> str:
    """scrypt of ``secret`` with ``salt``, hex: slow on purpose, so a stolen record resists guessing."""
    return hashlib.scrypt(secret.encode(), salt=salt, maxmem=64 << 20, **_SCRYPT).hex()


def create_key(lake_url: str, organization_id: str, now: datetime | None = None) -> CreatedKey:
    """Make a key for ``organization_id`` and store its salted hash in the lake."""
    lake = Root.open(lake_url)
    validate_organization_id(organization_id)
    key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_bytes(16)
    lk.write_json(lake, _record_path(lake, key_id), {
        "key_id": key_id,
        "organization_id": organization_id,
        "salt": salt.hex(),
        "scrypt": hash_secret(secret, salt),
        "created_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(),
    })
    return CreatedKey(key_id, organization_id, f"{PREFIX}_{key_id}_{secret}")


def organization_for(lake: Root, key: str | None) -> str | None:
    """The organization ``key`` belongs to, or None when it is malformed, unknown or wrong."""
    found = _KEY.fullmatch((key or "").strip())
    if not found:
        return None
    key_id, secret = found.groups()
    path = _record_path(lake, key_id)
    if not lake.exists(path):
        return None
    record = lk.read_json(lake, path)
    expected = record.get("scrypt", "")
    actual = hash_secret(secret, bytes.fromhex(record.get("salt", "")))
    return record.get("organization_id") if hmac.compare_digest(actual, expected) else None
