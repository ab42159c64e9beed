"""The compliance archive's layout and its hash chain: versions, manifests, receipts and holds per organization.

Layout below the exports root (a contract)::

    <org>/YYYY/MM/DD/audit-log_<org>_<date>.csv              version 1
    <org>/YYYY/MM/DD/audit-log_<org>_<date>.manifest.json
    <org>/YYYY/MM/DD/audit-log_<org>_<date>.vN.csv           version N >= 2
    <org>/YYYY/MM/DD/audit-log_<org>_<date>.vN.manifest.json
    <org>/_receipts/<run date>_<run id>.json                 purge receipts
    <org>/_holds/<time>_<kind>_<random>.json                 legal hold placed / released
    <org>/_chain/<sequence>.claim                            writers' sequence claims (not JSON)

Every JSON file below ``<org>/`` is an entry of the organization's chain: ``sequence`` 1, 2, 3…
and ``previous_sha256``, the SHA-256 of the bytes of entry ``sequence - 1``. Nothing is ever
overwritten or deleted: every object is made with a conditional create.

Linear under concurrency: a writer claims sequence N by conditionally creating the claim marker
N, which holds the entry's path and bytes; only one writer can create it, and the entry's
``previous_sha256`` comes from claim N-1. A writer that finds claim N-1's entry missing (its
writer crashed between the two creates) writes it from the claim before going on. So once the
head's entry is written, every claimed path exists: a path is claimed once, even by two writers
racing for it, and a claim whose answer was lost on the network is recognised by its bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from .storage import Root

CHAIN = "_chain"
RECEIPTS = "_receipts"
HOLDS = "_holds"
CLAIM_SUFFIX = ".claim"
MAX_CLAIM_ATTEMPTS = 1000
MAX_ENTRY_BYTES = 1 << 20
"""A chain entry is a few KiB of JSON; a larger file is none (tampered or misplaced): never read whole."""


def utc_stamp(now: datetime | None = None) -> str:
    """An ISO 8601 UTC time with ``Z``."""
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry_bytes(entry: dict[str, Any]) -> bytes:
    """How an entry is stored: indented JSON, keys sorted, one trailing newline."""
    return (json.dumps(entry, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# --- names ------------------------------------------------------------------------------------


def base_name(organization_id: str, day: date) -> str:
    return f"audit-log_{organization_id}_{day.isoformat()}"


def csv_name(organization_id: str, day: date, version: int = 1) -> str:
    return base_name(organization_id, day) + (f".v{version}" if version >= 2 else "") + ".csv"


def manifest_name(organization_id: str, day: date, version: int = 1) -> str:
    return base_name(organization_id, day) + (f".v{version}" if version >= 2 else "") + ".manifest.json"


def org_dir(exports: Root, organization_id: str) -> str:
    return exports.join(organization_id)


def day_dir(exports: Root, organization_id: str, day: date) -> str:
    return exports.join(organization_id, f"{day:%Y}", f"{day:%m}", f"{day:%d}")


_VERSIONED = re.compile(
    r"audit-log_(?P<org>[A-Za-z0-9][A-Za-z0-9_-]{0,63})_(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:\.v(?P<version>[2-9]|[1-9]\d+))?\.(?P<kind>csv|manifest\.json)"
)


@dataclass(frozen=True)
class ArchiveFile:
    """A daily CSV or manifest recognised by its name."""

    path: str
    day: date
    version: int
    is_manifest: bool


def parse_name(path: str, organization_id: str) -> ArchiveFile | None:
    """The (date, version, kind) a file name in the archive's layout stands for, else None."""
    match = _VERSIONED.fullmatch(path.rsplit("/", 1)[-1])
    if not match or match["org"] != organization_id:
        return None
    try:
        day = date.fromisoformat(match["date"])
    except ValueError:
        return None
    return ArchiveFile(path, day, int(match["version"] or 1), match["kind"] != "csv")


def list_org(exports: Root, organization_id: str, under: str | None = None) -> list[str]:
    """Every file below the organization's folder (or ``under`` it), fresh from the server."""
    folder = under or org_dir(exports, organization_id)
    exports.fs.invalidate_cache(folder)
    return exports.find(folder)


def day_files(paths: list[str], organization_id: str) -> dict[date, list[ArchiveFile]]:
    """The daily CSVs and manifests among ``paths``, per date, in version order."""
    found: dict[date, list[ArchiveFile]] = {}
    for path in paths:
        parsed = parse_name(path, organization_id)
        if parsed is not None:
            found.setdefault(parsed.day, []).append(parsed)
    return {day: sorted(files, key=lambda f: (f.version, f.is_manifest)) for day, files in sorted(found.items())}


def latest_manifest_paths(paths: list[str], organization_id: str) -> dict[date, str]:
    """Per date, the path of the highest version's manifest."""
    latest: dict[date, str] = {}
    for day, files in day_files(paths, organization_id).items():
        manifests = [f for f in files if f.is_manifest]
        if manifests:
            latest[day] = manifests[-1].path
    return latest


def organizations(exports: Root) -> list[str]:
    """Organizations with a folder in the archive (``_on-demand`` and other ``_`` names left out)."""
    exports.fs.invalidate_cache(exports.path)
    return [name for name in exports.listdir(exports.path) if not name.startswith(("_", "."))]


def read_entry(exports: Root, path: str) -> dict[str, Any]:
    """A chain entry's JSON; ValueError for a file over MAX_ENTRY_BYTES (read no further than that)."""
    body = exports.read_bytes(path, limit=MAX_ENTRY_BYTES + 1)
    if len(body) > MAX_ENTRY_BYTES:
        raise ValueError(f"{exports.display(path)} is over {MAX_ENTRY_BYTES} bytes: not a chain entry")
    return json.loads(body)


# --- the chain --------------------------------------------------------------------------------


def _claim_path(exports: Root, organization_id: str, sequence: int) -> str:
    return exports.join(organization_id, CHAIN, f"{sequence:010d}{CLAIM_SUFFIX}")


def _read_claim(exports: Root, path: str) -> tuple[str, bytes]:
    """A claim's entry path (relative to the exports root) and the entry's bytes."""
    relative, _, body = exports.read_bytes(path).partition(b"\n")
    return relative.decode(), body


def _head(exports: Root, organization_id: str) -> tuple[int, str | None]:
    """The highest claimed sequence and the SHA-256 of its entry (which is written if its writer crashed)."""
    claims = list_org(exports, organization_id, exports.join(organization_id, CHAIN))
    numbers = [int(p.rsplit("/", 1)[-1].removesuffix(CLAIM_SUFFIX)) for p in claims if p.endswith(CLAIM_SUFFIX)]
    if not numbers:
        return 0, None
    head = max(numbers)
    relative, body = _read_claim(exports, _claim_path(exports, organization_id, head))
    exports.create_if_absent(exports.join(relative), body)  # finish a crashed writer's entry (no-op if there)
    return head, sha256_hex(body)


def append(
    exports: Root, organization_id: str, path: str, entry: dict[str, Any], now: datetime | None = None
) -> dict[str, Any]:
    """Add ``entry`` at ``path`` (unique to this writer) as the organization's next chain entry.

    Sets ``sequence``, ``previous_sha256`` and ``created_at``, signs it when a key is configured,
    and returns the entry as stored.
    """
    from .signing import sign, signing_key  # cryptography: ~40 ms of import that only signing needs

    key = signing_key()
    relative = exports.relative(path)
    tried: list[bytes] = []  # the bodies this call claimed a sequence for
    for _ in range(MAX_CLAIM_ATTEMPTS):
        head, previous = _head(exports, organization_id)  # every claimed entry exists after this
        exports.fs.invalidate_cache(path)
        if exports.exists(path):  # claimed: by another writer, or by us when the claim's answer was lost
            stored = exports.read_bytes(path)
            if stored in tried:
                return json.loads(stored)
            raise FileExistsError(f"{exports.display(path)} already exists: chain entries are never rewritten")
        full = {
            **entry,
            "organization_id": organization_id,
            "sequence": head + 1,
            "previous_sha256": previous,
            "created_at": utc_stamp(now),
        }
        if key is not None:
            full = sign(full, key)
        body = entry_bytes(full)
        tried.append(body)
        if exports.create_if_absent(_claim_path(exports, organization_id, head + 1), relative.encode() + b"\n" + body):
            exports.create_if_absent(path, body)  # if its answer is lost, the claim's bytes are there all the same
            return full
    raise RuntimeError(f"could not claim a chain sequence for {organization_id} after {MAX_CLAIM_ATTEMPTS} tries")


def unique_suffix(now: datetime | None = None) -> str:
    """A sortable, unique file-name part: ``YYYYMMDDTHHMMSSZ_<random>``."""
    return f"{(now or datetime.now(UTC)).astimezone(UTC):%Y%m%dT%H%M%SZ}_{secrets.token_hex(4)}"


def safe_name(text: str) -> str:
    """``text`` as a file-name part: anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text).strip(".-") or "run"
