"""Raw event files: finding them, reading them, and parsing JSON Lines into string columns.

Parsing never fails a file: a line that is not a JSON object comes back as a ``malformed_json``
quarantine record, a file that cannot be read as one ``unreadable_file`` record.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgspec
import polars as pl

from .events import EVENT_FIELDS, MALFORMED_JSON, UNREADABLE_FILE
from .storage import Root

RAW_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".jsonl.gz")

PARSED_SCHEMA: dict[str, pl.DataType] = {
    **{f: pl.String() for f in EVENT_FIELDS},
    "attributes": pl.String(),
    "source_file": pl.String(),
    "line_number": pl.Int64(),
    "raw": pl.String(),
}
"""A parsed line: every event field as text (null where absent), extras as JSON, and provenance."""


class UnreadableFile(Exception):
    """The file's bytes cannot be read as (optionally gzipped) text."""


@dataclass(frozen=True)
class RawFile:
    """A raw file below the raw root, with a signature that changes when its content does."""

    path: str  # relative to the raw root, with "/" separators
    size: int
    signature: str


def signature(info: dict[str, Any]) -> str:
    """Size plus ETag (object stores) or mtime (file systems): a changed file is new work."""
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    return f"{info.get('size', 0)}:{str(tag).strip(chr(34))}"


def discover(root: Root) -> list[RawFile]:
    """Every raw event file below ``root``, in path order."""
    found = []
    for path, info in root.find_with_details(root.path).items():
        name = path.rsplit("/", 1)[-1]
        if name.startswith((".", "_")) or not path.endswith(RAW_SUFFIXES):
            continue
        found.append(RawFile(root.relative(path), int(info.get("size") or 0), signature(info)))
    return found


def read_text_bytes(root: Root, file: RawFile) -> bytes:
    """The file's bytes, gunzipped when it is a ``.gz``; UnreadableFile if that fails."""
    data = root.read_bytes(root.join(file.path))
    if not file.path.endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableFile(f"not a readable gzip file: {exc}") from None


@dataclass
class ParsedLines:
    """The lines of one or more files: JSON objects as columns, the rest as quarantine records."""

    columns: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in PARSED_SCHEMA})
    rejected: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.columns, schema=PARSED_SCHEMA)

    def reject(self, reason: str, detail: str, source: str, line: int | None, raw: str | None) -> None:
        self.rejected.append(
            {"reason": reason, "detail": detail, "source_file": source, "line_number": line, "raw": raw}
        )


_decoder = msgspec.json.Decoder()


def _as_text(value: Any) -> str | None:
    """A field value as text: strings as they are, other JSON values as their JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def parse_into(parsed: ParsedLines, data: bytes, source: str) -> None:
    """Parse JSON Lines ``data`` (LF or CRLF; blank lines skipped) from ``source`` into ``parsed``."""
    cols = parsed.columns
    field_columns = [(f, cols[f]) for f in EVENT_FIELDS]
    attributes, sources, numbers, raws = cols["attributes"], cols["source_file"], cols["line_number"], cols["raw"]
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue
        parsed.lines += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            parsed.reject(MALFORMED_JSON, f"not UTF-8: {exc.reason} at byte {exc.start}", source, number,
                          line.decode("utf-8", "backslashreplace"))
            continue
        try:
            obj = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            parsed.reject(MALFORMED_JSON, f"not JSON: {exc}", source, number, text)
            continue
        if not isinstance(obj, dict):
            parsed.reject(MALFORMED_JSON, f"not a JSON object but a {type(obj).__name__}", source, number, text)
            continue
        for name, column in field_columns:
            column.append(_as_text(obj.pop(name, None)))
        attributes.append(json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True) if obj else None)
        sources.append(source)
        numbers.append(number)
        raws.append(text)


def parse_files(root: Root, files: list[RawFile]) -> ParsedLines:
    """Read and parse ``files``; an unreadable file becomes one quarantine record."""
    parsed = ParsedLines()
    for file in files:
        try:
            data = read_text_bytes(root, file)
        except UnreadableFile as exc:
            parsed.reject(UNREADABLE_FILE, str(exc), file.path, None, None)
            continue
        parse_into(parsed, data, file.path)
    return parsed
