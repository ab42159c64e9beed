"""Offline verification of the archive: needs nothing but the files (and the public key to check signatures).

Per organization: the chain is unbroken (sequences 1..n once each, every ``previous_sha256``
right), every CSV matches its manifest's ``sha256``, ``bytes`` and ``rows``, every date from the
first export through ``through`` has a version, every ``supersedes`` exists, and with a public
key every entry carries a valid signature. Streams: CSVs are hashed in chunks, one organization
at a time, so memory stays bounded whatever the archive's size.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import archive as ar
from .archive import MAX_ENTRY_BYTES  # a larger file is reported, hashed in chunks, never held whole
from .signing import signature_valid
from .storage import Root

CODES = ("hash_mismatch", "rows_mismatch", "missing_file", "missing_day", "broken_chain", "bad_signature", "unsigned")
CHUNK_BYTES = 1 << 20
READ_THREADS = 8
MISSING_DAYS_LISTED = 1000
"""Missing days listed one by one per organization; one more line counts the rest (a ``--through``
years ahead stays one line, not one per day)."""
MISSING_SEQUENCES_LISTED = 1000
"""Missing sequences listed one by one per organization, then one line counts the rest: an entry
edited to claim sequence 10**15 costs one line, not a loop over every number before it."""


@dataclass(frozen=True)
class Problem:
    file: str
    code: str
    detail: str
    day: date | None = None

    def line(self) -> str:
        return f"{self.code} {self.file}: {self.detail}"


@dataclass
class Entry:
    """What verification keeps of one chain entry (never the CSV)."""

    path: str
    sha256: str
    body: dict[str, Any] | None


@dataclass
class OrgReport:
    organization_id: str
    entries: int = 0
    days: int = 0
    versions: int = 0
    problems: list[Problem] = field(default_factory=list)
    bodies: dict[str, dict[str, Any] | None] = field(default_factory=dict, repr=False)
    """Each entry's JSON object by path (None if it is not one), as read for the check."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "days": self.days,
            "versions": self.versions,
            "problems": len(self.problems),
            "ok": not self.problems,
        }


def csv_digest(exports: Root, path: str) -> tuple[str, int, int]:
    """SHA-256, size and data rows of a CSV, streamed: a record ends at a newline outside quotes."""
    digest, size, newlines, quoted = hashlib.sha256(), 0, 0, False
    for chunk in exports.read_pieces(path, CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
        if not quoted and b'"' not in chunk:
            newlines += chunk.count(b"\n")
            continue
        for index, part in enumerate(chunk.split(b'"')):
            quoted = quoted != (index > 0)
            if not quoted:
                newlines += part.count(b"\n")
    return digest.hexdigest(), size, max(newlines - 1, 0)


def read_entry(exports: Root, path: str) -> Entry:
    """An entry's SHA-256 and its JSON object (None if it is not one, or larger than MAX_ENTRY_BYTES)."""
    digest, kept = hashlib.sha256(), bytearray()
    for chunk in exports.read_pieces(path, CHUNK_BYTES):
        digest.update(chunk)
        if len(kept) <= MAX_ENTRY_BYTES:
            kept += chunk
    try:
        parsed = json.loads(kept) if len(kept) <= MAX_ENTRY_BYTES else None
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        parsed = None
    return Entry(path, digest.hexdigest(), parsed if isinstance(parsed, dict) else None)


def _sequence(body: dict[str, Any]) -> int | None:
    """The entry's ``sequence`` if it is a whole number from 1 (JSON's true is not one)."""
    value = body.get("sequence")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def chain_problems(entries: list[Entry], show: Any) -> list[Problem]:
    """Missing, repeated or out-of-place sequences and wrong ``previous_sha256`` links; work and lines
    grow with the entries, not with the sequence numbers they claim."""
    problems = [Problem(show(e.path), "broken_chain", "not a JSON chain entry") for e in entries if e.body is None]
    by_sequence: dict[int, list[Entry]] = {}
    for entry in entries:
        if entry.body is not None and (sequence := _sequence(entry.body)) is not None:
            by_sequence.setdefault(sequence, []).append(entry)
        elif entry.body is not None:
            problems.append(Problem(show(entry.path), "broken_chain", "no sequence"))
    following, listed = 1, 0  # the sequence the previous one present calls for; missing ones listed
    for sequence in sorted(by_sequence):
        found = by_sequence[sequence]
        shown = min(sequence - following, MISSING_SEQUENCES_LISTED - listed)
        problems += [
            Problem(show(found[0].path), "broken_chain", f"sequence {following + n} is missing before it")
            for n in range(shown)
        ]
        if (more := sequence - following - shown) > 0:
            detail = f"{more} more sequences are missing before it, from {following + shown}"
            problems.append(Problem(show(found[0].path), "broken_chain", detail))
        listed, following = listed + shown, sequence + 1
        for extra in found[1:]:
            problems.append(Problem(show(extra.path), "broken_chain", f"sequence {sequence} is repeated"))
        entry, previous = found[0], by_sequence.get(sequence - 1)
        expected = previous[0].sha256 if previous else None
        if sequence > 1 and previous and entry.body.get("previous_sha256") != expected:
            problems.append(
                Problem(show(entry.path), "broken_chain", f"previous_sha256 does not match sequence {sequence - 1}")
            )
        if sequence == 1 and entry.body.get("previous_sha256") is not None:
            problems.append(Problem(show(entry.path), "broken_chain", "sequence 1 must have previous_sha256 null"))
    return problems


def signature_problems(entries: list[Entry], public_key: Ed25519PublicKey, show: Any) -> list[Problem]:
    problems = []
    for entry in entries:
        if entry.body is None:
            continue
        if "signature" not in entry.body:
            problems.append(Problem(show(entry.path), "unsigned", "no signature"))
        elif not signature_valid(entry.body, public_key):
            problems.append(
                Problem(
                    show(entry.path),
                    "bad_signature",
                    f"signature does not verify with this key (key_id {entry.body.get('key_id')})",
                )
            )
    return problems


def file_problems(exports: Root, manifest: Entry, present: set[str], show: Any) -> list[Problem]:
    """The CSV a manifest describes: present, same SHA-256, size and rows; its ``supersedes`` present."""
    body = manifest.body or {}
    day = date.fromisoformat(body["date"])
    folder = posixpath.dirname(manifest.path)
    problems = []
    supersedes, file = _file_name(body, "supersedes"), _file_name(body, "file")
    if body.get("supersedes") and supersedes is None:
        problems.append(Problem(show(manifest.path), "missing_file", "supersedes no file of its folder", day))
    elif supersedes and posixpath.join(folder, supersedes) not in present:
        problems.append(
            Problem(show(posixpath.join(folder, supersedes)), "missing_file", f"superseded by {file}, but absent", day)
        )
    if file is None:
        return problems + [Problem(show(manifest.path), "missing_file", "names no CSV file of its folder", day)]
    csv_path = posixpath.join(folder, file)
    if csv_path not in present:
        return problems + [
            Problem(show(csv_path), "missing_file", f"named by {posixpath.basename(manifest.path)}", day)
        ]
    digest, size, rows = csv_digest(exports, csv_path)
    if digest != body.get("sha256") or size != body.get("bytes"):
        problems.append(
            Problem(
                show(csv_path),
                "hash_mismatch",
                f"sha256 {digest}, {size} bytes; the manifest says {body.get('sha256')}, {body.get('bytes')} bytes",
                day,
            )
        )
    elif rows != body.get("rows"):
        problems.append(
            Problem(show(csv_path), "rows_mismatch", f"{rows} rows; the manifest says {body.get('rows')}", day)
        )
    return problems


def verify_organization(
    exports: Root,
    organization_id: str,
    through: date,
    public_key: Ed25519PublicKey | None = None,
    days: Iterable[date] | None = None,
    paths: list[str] | None = None,
) -> OrgReport:
    """Check one organization's chain, files and days (``days``: hash only those dates' CSVs) in
    ``paths``, its archive's files (listed here if not given)."""
    report = OrgReport(organization_id)
    paths = ar.list_org(exports, organization_id) if paths is None else paths
    present, show = set(paths), exports.display
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        entries = list(pool.map(lambda p: read_entry(exports, p), [p for p in paths if p.endswith(".json")]))
        report.entries = len(entries)
        report.bodies = {e.path: e.body for e in entries}
        report.problems += chain_problems(entries, show)
        if public_key is not None:
            report.problems += signature_problems(entries, public_key, show)
        manifests = [e for e in entries if e.body and e.body.get("kind") == "export" and _valid_date(e.body)]
        wanted = set(days) if days is not None else None
        checked = [m for m in manifests if wanted is None or date.fromisoformat(m.body["date"]) in wanted]
        for found in pool.map(lambda m: file_problems(exports, m, present, show), checked):
            report.problems += found
    archived = sorted({date.fromisoformat(m.body["date"]) for m in manifests})
    report.days, report.versions = len(archived), len(manifests)
    listed, more = missing_days(archived, through)
    for day in listed:
        expected = exports.join(ar.day_dir(exports, organization_id, day), ar.csv_name(organization_id, day))
        report.problems.append(Problem(show(expected), "missing_day", "no version of this day", day))
    if more:
        detail = f"{more} more days without a version after {listed[-1]}, through {through}"
        report.problems.append(Problem(show(exports.join(organization_id)), "missing_day", detail))
    return report


def missing_days(archived: list[date], through: date, listed: int = MISSING_DAYS_LISTED) -> tuple[list[date], int]:
    """The first ``listed`` days from the first of ``archived`` (sorted) through ``through`` that have no
    version, and how many more there are: counted gap by gap, so work is bounded whatever ``through``."""
    inside = [d for d in archived if d <= through]
    found: list[date] = []
    more = 0
    if not inside:
        return found, more
    for day, following in zip(inside, [*inside[1:], through + timedelta(days=1)], strict=True):
        gap = (following - day).days - 1
        take = max(0, min(gap, listed - len(found)))
        found += [day + timedelta(days=n) for n in range(1, take + 1)]
        more += gap - take
    return found, more


def _file_name(body: dict[str, Any], key: str) -> str | None:
    """``body[key]`` if it names a file in the entry's own folder (a plain name, not a path)."""
    value = body.get(key)
    return value if isinstance(value, str) and value not in ("", ".", "..") and "/" not in value else None


def _valid_date(body: dict[str, Any]) -> bool:
    try:
        date.fromisoformat(str(body.get("date")))
        return True
    except ValueError:
        return False


def verify(
    export_url: str, through: date, organization_id: str | None = None, public_key: Ed25519PublicKey | None = None
) -> dict[str, Any]:
    """The JSON summary for every organization (or one); ``problems`` holds one line each."""
    exports = Root.open(export_url)
    orgs = [organization_id] if organization_id else ar.organizations(exports)
    summary: dict[str, Any] = {
        "export_root": export_url,
        "through": through.isoformat(),
        "signatures": public_key is not None,
        "organizations": {},
        "problems": [],
    }
    for org in orgs:
        report = verify_organization(exports, org, through, public_key)
        summary["organizations"][org] = report.as_dict()
        summary["problems"] += [p.line() for p in report.problems]
    summary["ok"] = not summary["problems"]
    return summary
