"""Raw event files: finding them, reading them, and parsing JSON Lines into string columns.

Parsing never fails a file: a line that is not a JSON object comes back as a ``malformed_json``
quarantine record, a file that cannot be read as one ``unreadable_file`` record.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from datetime import UTC, datetime
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json

from .events import EVENT_FIELDS, MALFORMED_JSON, UNREADABLE_FILE
from .storage import Root, is_hidden

RAW_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".jsonl.gz")

PARSED_SCHEMA: dict[str, pl.DataType] = {
    **{f: pl.String() for f in EVENT_FIELDS},
    "attributes": pl.String(),
    "source_file": pl.String(),
    "line_number": pl.Int64(),
}
"""A parsed line: every event field as text (null where absent), extras as JSON, and provenance."""

_ARROW_SCHEMA = pa.schema([(f, pa.string()) for f in EVENT_FIELDS])
_ROWS_PER_FRAME = 20_000
_FAST_JSON = pa_json.ParseOptions(explicit_schema=_ARROW_SCHEMA, unexpected_field_behavior="infer")


class UnreadableFile(Exception):
    """The file's bytes cannot be read as (optionally gzipped) text."""


@dataclass(frozen=True)
class RawFile:
    """A raw file below the raw root, with a signature that changes when its content does."""

    path: str  # relative to the raw root, with "/" separators
    size: int
    signature: str
    modified: "datetime | None" = None


def signature(info: dict[str, Any]) -> str:
    """Size plus ETag (object stores) or mtime (file systems): a changed file is new work."""
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    return f"{info.get('size', 0)}:{str(tag).strip(chr(34))}"


def discover(root: Root) -> "Discovery":
    """Every raw event file below ``root``, in path order."""
    found = []
    for path, info in root.find_with_details(root.path).items():
        if is_hidden(path) or not path.endswith(RAW_SUFFIXES):
            continue
        found.append(RawFile(root.relative(path), int(info.get("size") or 0), signature(info), modified_at(info)))
    return Discovery(found, {"suffix": 0, "hidden": 0, "symlink": 0})


def modified_at(info: dict[str, Any]) -> datetime | None:
    value = info.get("mtime") or info.get("LastModified")
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    return None


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
    """The lines of a batch of files: JSON objects as rows, the rest as quarantine records.

    The decompressed file contents are kept so that a row that later fails a rule can be
    quarantined with its original line, without carrying every line's text along.
    """

    frames: list[pl.DataFrame] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    texts: dict[str, bytes] = field(default_factory=dict)

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.frames) if self.frames else pl.DataFrame(schema=PARSED_SCHEMA)

    def reject(self, reason: str, detail: str, source: str, line: int | None, raw: str | None) -> None:
        self.rejected.append(
            {"reason": reason, "detail": detail, "source_file": source, "line_number": line, "raw": raw}
        )

    def raw_lines(self, sources: Sequence[str], numbers: Sequence[int]) -> list[str]:
        """The original text of the given (source file, line number) pairs."""
        starts: dict[str, np.ndarray] = {}
        out = []
        for source, number in zip(sources, numbers):
            if source not in starts:  # where each line begins: 8 bytes a line, not a copy of the file
                newlines = np.flatnonzero(np.frombuffer(self.texts[source], dtype=np.uint8) == 10)
                starts[source] = np.concatenate(([0], newlines + 1))
            data, begin = self.texts[source], starts[source]
            end = begin[number] - 1 if number < len(begin) else len(data)
            out.append(data[begin[number - 1]:end].removesuffix(b"\r").decode("utf-8", "backslashreplace"))
        return out


_decoder = msgspec.json.Decoder()


def _as_text(value: Any) -> str | None:
    """A field value as text: strings as they are, other JSON values as their JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def attributes_json(extras: dict[str, Any]) -> str | None:
    """The canonical JSON of a line's extra fields (sorted keys; a null field counts as absent)."""
    kept = {k: v for k, v in extras.items() if v is not None}
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False, sort_keys=True) if kept else None


def _line_numbers(data: bytes, rows: int) -> Sequence[int]:
    """1-based numbers of the non-blank lines (what a JSON Lines reader returns rows for)."""
    if data.rstrip().count(b"\n") + 1 == rows:  # every line is a row: no blank lines to skip
        return range(1, rows + 1)
    return [n for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]


def _parse_fast(data: bytes, source: str) -> pl.DataFrame | None:
    """Fast path, in Arrow: a file whose lines are all JSON objects with string (or null) event fields.

    Returns None for anything else (a bad line, a non-string field), which the line-by-line
    parser then handles. Rows with extra fields get their attributes from the same canonical
    encoder the line-by-line parser uses, so both paths give identical rows.
    """
    try:
        table = pa_json.read_json(io.BytesIO(data), parse_options=_FAST_JSON)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    numbers = _line_numbers(data, table.num_rows)
    extras = [c for c in table.column_names if c not in EVENT_FIELDS]
    attributes: list[str | None] = [None] * table.num_rows
    if extras:
        has_extra = pl.from_arrow(table.select(extras)).select(  # type: ignore[union-attr]
            pl.any_horizontal(pl.all().is_not_null()).alias("has_extra"))["has_extra"]
        lines = data.split(b"\n")
        for row in has_extra.arg_true().to_list():
            obj = _decoder.decode(lines[numbers[row] - 1])
            attributes[row] = attributes_json({k: v for k, v in obj.items() if k not in EVENT_FIELDS})
    return pl.from_arrow(table.select(list(EVENT_FIELDS))).with_columns(  # type: ignore[union-attr]
        attributes=pl.Series(attributes, dtype=pl.String),
        source_file=pl.lit(source, pl.String),
        line_number=pl.Series(numbers, dtype=pl.Int64),
    )


def _parse_lines(parsed: ParsedLines, data: bytes, source: str) -> pl.DataFrame:
    """Line by line, for files with extra fields, non-string values or bad lines."""
    rows: list[tuple] = []
    frames: list[pl.DataFrame] = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if len(rows) == _ROWS_PER_FRAME:  # bound the Python objects alive at once
            frames.append(pl.DataFrame(rows, schema=PARSED_SCHEMA, orient="row"))
            rows = []
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue
        try:
            obj = _decoder.decode(line)
        except UnicodeDecodeError as exc:
            parsed.reject(MALFORMED_JSON, f"not UTF-8: {exc.reason} at byte {exc.start}", source, number,
                          line.decode("utf-8", "backslashreplace"))
            continue
        except msgspec.DecodeError as exc:
            parsed.reject(MALFORMED_JSON, f"not JSON: {exc}", source, number, line.decode("utf-8", "replace"))
            continue
        if not isinstance(obj, dict):
            parsed.reject(MALFORMED_JSON, f"not a JSON object but a {type(obj).__name__}", source, number,
                          line.decode())
            continue
        values = [_as_text(obj.pop(name, None)) for name in EVENT_FIELDS]
        rows.append((*values, attributes_json(obj), source, number))
    frames.append(pl.DataFrame(rows, schema=PARSED_SCHEMA, orient="row"))
    return pl.concat(frames)


def parse_into(parsed: ParsedLines, data: bytes, source: str) -> None:
    """Parse JSON Lines ``data`` (LF or CRLF; blank lines skipped) from ``source`` into ``parsed``."""
    rejected_before = len(parsed.rejected)
    frame = _parse_fast(data, source)
    if frame is None:
        frame = _parse_lines(parsed, data, source)
    parsed.frames.append(frame)
    parsed.texts[source] = data
    parsed.lines += frame.height + len(parsed.rejected) - rejected_before


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


# --- interim chunk interface (the hardened, streaming parser replaces this) ---------------------

@dataclass(frozen=True)
class Limits:
    line_bytes: int = 1 << 20

    @classmethod
    def from_env(cls) -> "Limits":
        return cls()


@dataclass
class Discovery:
    files: list[RawFile]
    skipped: dict[str, int]


@dataclass
class Chunk:
    source: str
    rows: pl.DataFrame
    rejected: pl.DataFrame
    first_line: int
    last_line: int
    nbytes: int
    done: bool
    parsed: ParsedLines | None = None

    def raw_lines(self, line_numbers: Sequence[int]) -> list[str]:
        assert self.parsed is not None
        return self.parsed.raw_lines([self.source] * len(line_numbers), line_numbers)


def read_chunks(root: Root, file: RawFile, *, chunk_bytes: int, after_line: int = 0,
                limits: Limits = Limits()) -> Iterator[Chunk]:
    parsed = ParsedLines()
    try:
        data = read_text_bytes(root, file)
    except UnreadableFile as exc:
        parsed.reject(UNREADABLE_FILE, str(exc), file.path, None, None)
        data = b""
    else:
        parse_into(parsed, data, file.path)
    rejected = pl.DataFrame(parsed.rejected, schema={"reason": pl.String, "detail": pl.String, "source_file": pl.String,
                                                      "line_number": pl.Int64, "raw": pl.String})
    rows = parsed.frame().filter(pl.col("line_number") > after_line)
    rejected = rejected.filter(pl.col("line_number").is_null() | (pl.col("line_number") > after_line))
    last = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    yield Chunk(file.path, rows, rejected, after_line + 1, last, len(data), True, parsed)
