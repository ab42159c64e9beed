"""Audit events: the raw input contract, the lake schema, and the validation rules.

Every rule is defined once here and yields both its polars routing expression (which row
breaks it, and why) and the Great Expectations expectations that re-check the accepted rows.
Rules are ordered: a bad row is quarantined with the reason of the first rule it breaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import polars as pl

from .catalog import ACTION_TYPES, ACTIONS

if TYPE_CHECKING:  # great_expectations is imported lazily: it costs seconds
    from great_expectations.expectations import Expectation

# --- raw input contract ---------------------------------------------------------------------

REQUIRED_FIELDS: tuple[str, ...] = (
    "event_id",
    "event_time",
    "organization_id",
    "user_email",
    "action",
    "ip_address",
)
OPTIONAL_FIELDS: tuple[str, ...] = ("resource", "user_agent", "region")
EVENT_FIELDS: tuple[str, ...] = REQUIRED_FIELDS + OPTIONAL_FIELDS
"""The named fields of a raw event; any other field is kept in ``attributes``."""

FIELD_BYTES: Mapping[str, int] = MappingProxyType(
    {
        **{f: 256 for f in EVENT_FIELDS},
        "resource": 8 * 1024,
        "user_agent": 8 * 1024,
    }
)
"""Default maximum UTF-8 size of each named field (``field_too_large`` beyond it): a platform's ids,
emails, addresses and actions are short; a resource path or a user agent may be long, but not unbounded."""

# --- lake schema ----------------------------------------------------------------------------

TIME_UNIT = "us"
UTC_DATETIME = pl.Datetime(TIME_UNIT, "UTC")
LAKE_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "event_time": UTC_DATETIME,
    "organization_id": pl.String(),
    "user_email": pl.String(),
    "action": pl.String(),
    "action_type": pl.String(),
    "resource": pl.String(),
    "ip_address": pl.String(),
    "user_agent": pl.String(),
    "region": pl.String(),
    "attributes": pl.String(),
    "ingested_at": UTC_DATETIME,
    "source_file": pl.String(),
}
"""Columns of an event in the lake (partition columns included)."""

PARTITION_SCHEMA: dict[str, pl.DataType] = {"event_date": pl.Date(), "organization_id": pl.String()}
"""Hive partition keys, outermost first. Pass as ``hive_schema`` so ids like ``007`` stay strings."""

CONTENT_COLUMNS: tuple[str, ...] = EVENT_FIELDS + ("attributes",)
"""What makes two deliveries of an event_id "the same event"."""

# --- formats (each pattern is the contract; polars and Great Expectations both use it) -------

_HEX = "[0-9A-Fa-f]{1,4}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"


def _hextets(n: int) -> str:
    """Exactly ``n`` colon-separated hextets."""
    return "" if n == 0 else _HEX + (f"(?::{_HEX}){{{n - 1}}}" if n > 1 else "")


def _ipv6() -> str:
    """RFC 4291 text forms: full, ``::``-compressed, and with a dotted IPv4 tail."""
    forms = [f"(?:{_HEX}:){{7}}{_HEX}", f"(?:{_HEX}:){{6}}{_IPV4}"]
    for left in range(8):  # hextets before "::"; up to 7 - left after it
        after = 7 - left
        right = f"(?:{_HEX}(?::{_HEX}){{0,{after - 1}}})?" if after else ""
        forms.append(f"{_hextets(left)}::{right}")
    for left in range(6):  # with an IPv4 tail, 6 hextets' worth of room
        forms.append(f"{_hextets(left)}::(?:{_HEX}:){{0,{5 - left}}}{_IPV4}")
    return "|".join(forms)


IP_PATTERN = rf"^(?:{_IPV4}|{_ipv6()})$"
ORGANIZATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
EMAIL_PATTERN = r"^[^@]+@[^@]+$"
TIMESTAMP_PATTERN = (  # seconds stop at 59: a leap second (:60) would silently become the next second
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})$"
)
WHITESPACE = "".join(
    map(
        chr,
        (
            0x09,
            0x0A,
            0x0B,
            0x0C,
            0x0D,
            0x20,
            0x85,
            0xA0,
            0x1680,
            *range(0x2000, 0x200B),
            0x2028,
            0x2029,
            0x202F,
            0x205F,
            0x3000,
        ),
    )
)
"""Unicode's White_Space characters, listed so that polars (Rust) and Great Expectations (Python) agree."""
NOT_BLANK_PATTERN = f"[^{WHITESPACE}]"
"""A value holds something besides whitespace (a whitespace-only required field is missing)."""
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    """ISO 8601 text with a ``Z`` or ``±HH:MM`` offset -> UTC datetime; null where it is invalid."""
    return text.map_batches(_utc_times, return_dtype=UTC_DATETIME)


def _utc_times(text: pl.Series) -> pl.Series:
    """:func:`parse_timestamp` on a column. Arrow's ISO 8601 cast takes ~0.05 s of CPU per 1M values
    where polars' format-driven parse takes ~0.9 s; it fails the whole column on one impossible date
    (February 30th, offset +24:00) where polars gives a null, so such a column takes polars' path.
    Both agree on every value the pattern admits (``tests/test_rules.py``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    candidates = pl.select(pl.when(text.str.contains(TIMESTAMP_PATTERN)).then(text)).to_series()
    try:
        parsed = pc.cast(candidates.to_arrow(), pa.timestamp(TIME_UNIT, "UTC"))
    except pa.ArrowInvalid:
        return candidates.str.replace(r"Z$", "+00:00").str.to_datetime(
            _TIMESTAMP_FORMAT, time_unit=TIME_UNIT, time_zone="UTC", strict=False
        )
    return pl.Series(text.name, parsed, dtype=UTC_DATETIME)


# --- rules ----------------------------------------------------------------------------------

PARSED_TIME = "_event_time"
"""Column that routing adds: ``event_time`` parsed to UTC (null where invalid)."""


@dataclass(frozen=True)
class Window:
    """The ingest-time bounds that the rules check against: the time window and the field sizes."""

    now: datetime
    retention_days: int = 90
    future_tolerance: timedelta = timedelta(minutes=15)
    field_bytes: Mapping[str, int] = field(default_factory=lambda: FIELD_BYTES, hash=False)

    @property
    def oldest_date(self) -> date:
        """The oldest UTC event date still inside retention."""
        return self.now.astimezone(UTC).date() - timedelta(days=self.retention_days)

    @property
    def latest_time(self) -> datetime:
        return self.now.astimezone(UTC) + self.future_tolerance


def _quoted(column: str) -> pl.Expr:
    return pl.format("'{}'", pl.col(column).str.slice(0, 200))


@dataclass(frozen=True)
class Rule:
    """One validation rule: its quarantine reason, how rows break it, and how GE re-checks it."""

    reason: str

    def violated(self, window: Window) -> pl.Expr | None:
        """True where a row breaks the rule; None when the rule is not row-local."""
        raise NotImplementedError

    def detail(self, window: Window) -> pl.Expr:
        """A human-readable explanation for a row that breaks the rule."""
        raise NotImplementedError

    def expectations(self, window: Window) -> list[Expectation]:
        """Great Expectations checks that accepted, lake-shaped rows must pass."""
        raise NotImplementedError


def _missing(column: str) -> pl.Expr:
    """Absent, null, empty or only whitespace."""
    return pl.col(column).is_null() | ~pl.col(column).str.contains(NOT_BLANK_PATTERN)


@dataclass(frozen=True)
class Required(Rule):
    columns: tuple[str, ...] = REQUIRED_FIELDS

    def violated(self, window: Window) -> pl.Expr:
        return pl.any_horizontal(_missing(c) for c in self.columns)

    def detail(self, window: Window) -> pl.Expr:
        names = [pl.when(_missing(c)).then(pl.lit(c)) for c in self.columns]
        return pl.concat_str(pl.lit("missing "), pl.concat_str(names, separator=", ", ignore_nulls=True))

    def expectations(self, window: Window) -> list[Expectation]:
        import great_expectations.expectations as gxe

        out: list[Expectation] = []
        for c in self.columns:
            out.append(gxe.ExpectColumnValuesToNotBeNull(column=c))
            if c != "event_time":
                out.append(gxe.ExpectColumnValuesToMatchRegex(column=c, regex=NOT_BLANK_PATTERN))
        return out


@dataclass(frozen=True)
class FieldSize(Rule):
    """Every named field fits its size limit (``Window.field_bytes``, UTF-8 bytes)."""

    columns: tuple[str, ...] = EVENT_FIELDS

    def _too_large(self, window: Window) -> list[tuple[str, pl.Expr]]:
        return [
            (c, (pl.col(c).str.len_bytes() > window.field_bytes[c]).fill_null(False))
            for c in self.columns
            if c in window.field_bytes
        ]  # a null field is not too large (Required says if it is missing)

    def violated(self, window: Window) -> pl.Expr:
        return pl.any_horizontal(broken for _, broken in self._too_large(window))

    def detail(self, window: Window) -> pl.Expr:
        parts = [
            pl.when(broken).then(
                pl.format(
                    "{} is {} bytes (limit {})", pl.lit(c), pl.col(c).str.len_bytes(), pl.lit(window.field_bytes[c])
                )
            )
            for c, broken in self._too_large(window)
        ]
        return pl.concat_str(parts, separator=", ", ignore_nulls=True)

    def expectations(self, window: Window) -> list[Expectation]:
        import great_expectations.expectations as gxe

        # GE counts characters, never more than bytes: a row within the byte limit always passes.
        # Only text columns: the lake types event_time as a timestamp, which has no length.
        return [
            gxe.ExpectColumnValueLengthsToBeBetween(column=c, max_value=window.field_bytes[c])
            for c in self.columns
            if c in window.field_bytes and LAKE_SCHEMA.get(c) == pl.String()
        ]


@dataclass(frozen=True)
class InCatalog(Rule):
    column: str = "action"

    def violated(self, window: Window) -> pl.Expr:
        return ~pl.col(self.column).is_in(list(ACTIONS))

    def detail(self, window: Window) -> pl.Expr:
        return pl.format("{} is not an action in the catalog", _quoted(self.column))

    def expectations(self, window: Window) -> list[Expectation]:
        import great_expectations.expectations as gxe

        return [
            gxe.ExpectColumnValuesToBeInSet(column=self.column, value_set=list(ACTIONS)),
            gxe.ExpectColumnValuesToBeInSet(column="action_type", value_set=list(ACTION_TYPES)),
        ]


@dataclass(frozen=True)
class Timestamp(Rule):
    column: str = "event_time"

    def violated(self, window: Window) -> pl.Expr:
        return pl.col(PARSED_TIME).is_null()

    def detail(self, window: Window) -> pl.Expr:
        return pl.format(
            "{} is not an ISO 8601 time with a timezone (YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM))",
            _quoted(self.column),
        )

    def expectations(self, window: Window) -> list[Expectation]:
        return []  # typed as a UTC timestamp in the lake; nullness is checked by Required


@dataclass(frozen=True)
class Pattern(Rule):
    column: str = ""
    pattern: str = ""
    description: str = ""

    def violated(self, window: Window) -> pl.Expr:
        return ~pl.col(self.column).str.contains(self.pattern)

    def detail(self, window: Window) -> pl.Expr:
        return pl.format("{} is not {}", _quoted(self.column), pl.lit(self.description))

    def expectations(self, window: Window) -> list[Expectation]:
        import great_expectations.expectations as gxe

        return [gxe.ExpectColumnValuesToMatchRegex(column=self.column, regex=self.pattern)]


@dataclass(frozen=True)
class NotBefore(Rule):
    """The event's UTC date is within the retention window of the ingest date."""

    def violated(self, window: Window) -> pl.Expr:
        return pl.col(PARSED_TIME).dt.date() < window.oldest_date

    def detail(self, window: Window) -> pl.Expr:
        return pl.format(
            "event date {} is more than {} days before {}",
            pl.col(PARSED_TIME).dt.date(),
            pl.lit(window.retention_days),
            pl.lit(window.now.astimezone(UTC).date()),
        )

    def expectations(self, window: Window) -> list[Expectation]:
        import great_expectations.expectations as gxe

        oldest = datetime.combine(window.oldest_date, datetime.min.time(), UTC)
        return [gxe.ExpectColumnMinToBeBetween(column="event_time", min_value=oldest)]


@dataclass(frozen=True)
class NotAfter(Rule):
    """The event is not from the future (beyond a small clock-skew tolerance)."""

    def violated(self, window: Window) -> pl.Expr:
        return pl.col(PARSED_TIME) > window.latest_time

    def detail(self, window: Window) -> pl.Expr:
        minutes = int(window.future_tolerance.total_seconds() // 60)
        return pl.format(
            "event time {} is more than {} minutes after the ingest time {}",
            pl.col(PARSED_TIME).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
            pl.lit(minutes),
            pl.lit(window.now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        )

    def expectations(self, window: Window) -> list[Expectation]:
        import great_expectations.expectations as gxe

        return [gxe.ExpectColumnMaxToBeBetween(column="event_time", max_value=window.latest_time)]


@dataclass(frozen=True)
class Unique(Rule):
    """One version of each event_id: checked against the lake and the batch by ``dedupe``."""

    column: str = "event_id"

    def violated(self, window: Window) -> None:
        return None

    def detail(self, window: Window) -> pl.Expr:
        return pl.lit("event_id already seen with different content")

    def expectations(self, window: Window) -> list[Expectation]:
        import great_expectations.expectations as gxe

        return [gxe.ExpectColumnValuesToBeUnique(column=self.column)]


# reasons found while reading a file, before any row exists (see ``raw``), in precedence order
LINE_TOO_LARGE = "line_too_large"
TOO_DEEPLY_NESTED = "too_deeply_nested"
MALFORMED_JSON = "malformed_json"
INVALID_TYPE = "invalid_type"  # a required field that is not a JSON string
FILE_TOO_LARGE = "file_too_large"
UNREADABLE_FILE = "unreadable_file"
LINE_REASONS: tuple[str, ...] = (LINE_TOO_LARGE, TOO_DEEPLY_NESTED, MALFORMED_JSON, INVALID_TYPE)
"""What the parser rejects a line for, first check first: it never reads a line past its size or depth."""
FILE_REASONS: tuple[str, ...] = (FILE_TOO_LARGE, UNREADABLE_FILE)
"""What the parser rejects the rest of a file for: one record per file."""
CONFLICTING_DUPLICATE = "conflicting_duplicate"

RULES: tuple[Rule, ...] = (
    Required("missing_field"),
    FieldSize("field_too_large"),
    InCatalog("unknown_action"),
    Timestamp("invalid_timestamp"),
    Pattern(
        "invalid_organization_id",
        "organization_id",
        ORGANIZATION_ID_PATTERN,
        "1-64 letters, digits, '_' or '-' starting with a letter or digit",
    ),
    Pattern("invalid_ip", "ip_address", IP_PATTERN, "an IPv4 or IPv6 address"),
    Pattern("invalid_email", "user_email", EMAIL_PATTERN, "an email address (one '@' with text on both sides)"),
    NotBefore("outside_retention"),
    NotAfter("future_timestamp"),
    Unique(CONFLICTING_DUPLICATE),
)
"""The row rules, in the order their reasons take precedence."""

REASONS: tuple[str, ...] = (*LINE_REASONS, *(r.reason for r in RULES), *FILE_REASONS)
"""Every quarantine reason, in precedence order (the last two are per file)."""

NEVER_REPLAYED: frozenset[str] = frozenset({"outside_retention", LINE_TOO_LARGE, *FILE_REASONS})
"""Reasons a quarantine replay never retries: the event stays expired, or the line is not stored whole."""
REPLAYABLE: tuple[str, ...] = tuple(r for r in REASONS if r not in NEVER_REPLAYED)
"""Reasons a quarantine replay may retry, in precedence order."""


def route(frame: pl.DataFrame, window: Window, rules: Sequence[Rule] = RULES) -> pl.DataFrame:
    """Add ``reason`` and ``detail`` (null for a valid row) and the parsed time to raw string rows.

    Each row gets the reason of the first row-local rule it breaks. Details are written for the rows
    that break one only: polars evaluates every branch of a when-chain for every row, and the
    details' formatting was a third of routing's CPU.
    """
    local = [(rule, broken) for rule in rules if (broken := rule.violated(window)) is not None]
    reason: Any = pl.lit(None, pl.String)
    for rule, violated in reversed(local):  # build the when-chain so the first rule wins
        reason = pl.when(violated.fill_null(True)).then(pl.lit(rule.reason)).otherwise(reason)
    routed = frame.with_columns(parse_timestamp(pl.col("event_time")).alias(PARSED_TIME)).with_columns(
        reason.alias("reason")
    )
    broken = routed["reason"].is_not_null().arg_true()
    detail = pl.repeat(None, routed.height, dtype=pl.String, eager=True).alias("detail")
    if len(broken):
        written: Any = pl.lit(None, pl.String)
        for rule, _ in local:
            written = pl.when(pl.col("reason") == rule.reason).then(rule.detail(window)).otherwise(written)
        detail = detail.scatter(broken, routed[broken].select(written)[:, 0])
    return routed.with_columns(detail)


def expectations(window: Window, rules: Sequence[Rule] = RULES) -> list[Expectation]:
    """The Great Expectations suite for accepted rows, generated from the same rules."""
    return [e for rule in rules for e in rule.expectations(window)]


def normalize(valid: pl.DataFrame) -> pl.DataFrame:
    """Raw string rows that passed routing -> lake-shaped rows (without ingest metadata).

    Optional fields that are empty become null, so "absent", null and "" are the same event.
    """
    derived = {
        "event_time": pl.col(PARSED_TIME),
        "action_type": pl.col("action").replace_strict(dict(ACTIONS), return_dtype=pl.String),
        **{c: pl.when(pl.col(c) != "").then(pl.col(c)) for c in OPTIONAL_FIELDS},
    }
    columns = [c for c in LAKE_SCHEMA if c not in ("ingested_at", "source_file")]
    return valid.select(derived.get(c, pl.col(c)).alias(c) for c in columns)


def event_date(time: pl.Expr = pl.col("event_time")) -> pl.Expr:
    """The UTC date an event belongs to (its partition)."""
    return time.dt.date().alias("event_date")
