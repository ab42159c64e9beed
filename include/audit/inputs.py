"""User input: the one place where text from people and programs becomes trusted values.

Every entry point (CLI flags, the API's query parameters, the on-demand trigger form, the
filter language's ``created:`` values, the daily export's filters file) validates through
these functions, so a value means the same everywhere and a bad one is always a ``BadInput``:
exit 2 in the CLI, HTTP 400 in the API, a failed (not retried) task in a DAG.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from .events import ORGANIZATION_ID_PATTERN

__all__ = [
    "CLOCK_YEARS",
    "MAX_RANGE",
    "BadInput",
    "check_clock",
    "check_range",
    "is_organization_id",
    "parse_date",
    "parse_time",
    "validate_organization_id",
]

T = TypeVar("T", date, datetime)
MAX_RANGE = timedelta(days=366)
"""The longest time range one request or export may read (the lake keeps 90 days)."""


CLOCK_YEARS = range(1970, 9000)
"""Years a command may run as (``--now``, ``--today``) or be given as a day to archive, retain or
hold: it counts days and years from them, which must never overflow the calendar."""


class BadInput(ValueError):
    """The caller's input is invalid; the message is one line saying what and why."""


_ORGANIZATION_ID = re.compile(ORGANIZATION_ID_PATTERN)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _shown(value: object) -> str:
    """``value`` for an error message: repr, cut short so a huge input cannot flood a log line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_organization_id(value: object) -> bool:
    """Whether ``value`` is a valid organization id (1-64 letters, digits, '_' or '-', starting with a
    letter or digit: safe as a path segment)."""
    return isinstance(value, str) and _ORGANIZATION_ID.fullmatch(value) is not None


def validate_organization_id(value: object) -> str:
    """``value`` if it is a valid organization id (it becomes a path segment), else BadInput."""
    if not is_organization_id(value):
        raise BadInput(
            f"invalid organization id {_shown(value)}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _printable(value: object, name: str, form: str) -> str:
    if not isinstance(value, str):
        raise BadInput(f"{name} {_shown(value)} is not {form}")
    if _CONTROL.search(value):
        raise BadInput(f"{name} {_shown(value)} contains a control character")
    return value


def parse_time(value: object, name: str = "time") -> datetime:
    """An ISO 8601 time that states its timezone, as an aware UTC datetime; BadInput otherwise.

    Control characters (a trailing NUL, a newline) are refused rather than stripped, and a time
    whose UTC equivalent falls outside years 1-9999 is a BadInput, not an OverflowError.
    """
    text = _printable(value, name, "an ISO 8601 time (e.g. 2026-11-01T00:00:00Z)").strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{name} {_shown(value)} is not an ISO 8601 time (e.g. 2026-11-01T00:00:00Z)") from None
    if parsed.tzinfo is None:
        raise BadInput(f"{name} {_shown(value)} has no timezone: add Z or an offset like +02:00")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise BadInput(f"{name} {_shown(value)} is outside the years 1-9999 in UTC") from None


def parse_date(value: object, name: str = "date") -> date:
    """A calendar date written exactly ``YYYY-MM-DD`` (no week dates, no ``YYYYMMDD``); BadInput otherwise."""
    text = _printable(value, name, "a date in the form YYYY-MM-DD")
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{name} {_shown(value)} is not a date in the form YYYY-MM-DD") from None


def day_start(day: date) -> datetime:
    """Midnight UTC that starts ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def day_end(day: date) -> datetime:
    """Midnight UTC that ends ``day`` (exclusive); capped at the last representable moment for 9999-12-31."""
    try:
        return day_start(day) + timedelta(days=1)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def check_range(start: datetime, end: datetime, start_name: str = "start", end_name: str = "end") -> None:
    """BadInput unless ``start <= end`` and the range spans at most MAX_RANGE."""
    if start > end:
        raise BadInput(f"{start_name} {start.isoformat()} is after {end_name} {end.isoformat()}")
    if end - start > MAX_RANGE:
        raise BadInput(
            f"the range from {start_name} to {end_name} is longer than {MAX_RANGE.days} days (the lake keeps 90)"
        )


def check_clock(value: T, name: str) -> T:
    """``value`` (a date or time) if its year is in CLOCK_YEARS, else BadInput."""
    if value.year not in CLOCK_YEARS:
        raise BadInput(f"{name} {value.isoformat()} is outside the years {CLOCK_YEARS[0]}-{CLOCK_YEARS[-1]}")
    return value
