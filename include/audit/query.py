"""Reading events back: the rows users see, and the one filter that CLI, DAGs, API and page share.

Reads are pruned by partition: an organization's time range touches only
``events/event_date=D/organization_id=<org>/`` for the dates it spans, never the whole lake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Iterator

import polars as pl

from . import lake as lk
from .catalog import ACTIONS
from .events import ORGANIZATION_ID_PATTERN
from .storage import Root

if TYPE_CHECKING:  # filters imports this module
    from .filters import Query


class BadInput(ValueError):
    """The caller's input is invalid; the message is one line saying what and why."""


_ORGANIZATION_ID = re.compile(ORGANIZATION_ID_PATTERN.removeprefix("^").removesuffix("$"))

ROW_COLUMNS: dict[str, pl.Expr] = {
    "time": pl.col("event_time").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
    "organization_id": pl.col("organization_id"),
    "user": pl.col("user_email"),
    "action": pl.col("action"),
    "action_type": pl.col("action_type"),
    "resource": pl.col("resource"),
    "ip_address": pl.col("ip_address"),
    "user_agent": pl.col("user_agent"),
    "region": pl.col("region"),
    "event_id": pl.col("event_id"),
}
"""The columns a user sees (CSV header, API fields, page), as expressions over lake rows."""

READ_COLUMNS = ["event_id", "event_time", "user_email", "action", "action_type", "resource", "ip_address",
                "user_agent", "region"]


def validate_organization_id(value: str) -> str:
    """``value`` if it is a valid organization id (it becomes a path segment), else BadInput."""
    if not isinstance(value, str) or not _ORGANIZATION_ID.fullmatch(value):
        raise BadInput(f"invalid organization id {value!r}: use 1-64 letters, digits, '_' or '-', "
                       "starting with a letter or digit")
    return value


def parse_time(value: str, name: str = "time") -> datetime:
    """An ISO 8601 time that states its timezone, as UTC; BadInput otherwise."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise BadInput(f"{name} {value!r} is not an ISO 8601 time (e.g. 2026-11-01T00:00:00Z)") from None
    if parsed.tzinfo is None:
        raise BadInput(f"{name} {value!r} has no timezone: add Z or an offset like +02:00")
    return parsed.astimezone(UTC)


def parse_date(value: str, name: str = "date") -> date:
    """A calendar date written exactly ``YYYY-MM-DD`` (fromisoformat alone also takes 20261124 or 2026-W48)."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except (ValueError, TypeError):
        raise BadInput(f"{name} {value!r} is not a date in the form YYYY-MM-DD") from None


@dataclass(frozen=True)
class EventFilter:
    """Which events of one organization to show or export. Times are inclusive bounds."""

    organization_id: str
    start: datetime
    end: datetime
    search: str | None = None
    users: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    query: Query | None = None
    """The filter language (``filters.parse``): ANDed with everything above."""

    def __post_init__(self) -> None:
        validate_organization_id(self.organization_id)
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None:
                raise BadInput(f"{name} {value.isoformat()} has no timezone")
        if self.start > self.end:
            raise BadInput(f"start {self.start.isoformat()} is after end {self.end.isoformat()}")
        unknown = [a for a in self.actions if a not in ACTIONS]
        if unknown:
            raise BadInput(f"unknown action {unknown[0]!r}: actions are the catalog's names, e.g. CreateJobRun")

    def dates(self) -> list[date]:
        """The UTC event dates the range touches (its partitions), narrowed by the query's created: bounds."""
        lower, upper = self.query.time_bounds() if self.query else (None, None)
        first = max(self.start, lower or self.start).astimezone(UTC).date()
        last = min(self.end, upper or self.end).astimezone(UTC).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def predicate(self) -> pl.Expr:
        """True for lake rows (with organization_id) that the filter keeps."""
        keep = pl.col("event_time").is_between(self.start.astimezone(UTC), self.end.astimezone(UTC), closed="both")
        if self.users:
            keep &= pl.col("user_email").str.to_lowercase().is_in([u.lower() for u in self.users])
        if self.actions:
            keep &= pl.col("action").is_in(list(self.actions))
        if self.search:
            keep &= search_predicate(self.search)
        if self.query is not None and self.query.terms:
            keep &= self.query.predicate()
        return keep


def search_predicate(term: str) -> pl.Expr:
    """Case-insensitive substring match of ``term`` on any column a user sees."""
    needle = term.lower()
    return pl.any_horizontal(
        expr.str.to_lowercase().str.contains(needle, literal=True).fill_null(False) for expr in ROW_COLUMNS.values()
    )


def rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Lake rows -> the user-visible columns, sorted by time then event_id."""
    return frame.sort("event_time", "event_id").select(expr.alias(name) for name, expr in ROW_COLUMNS.items())


def iter_days(lake: Root, flt: EventFilter, newest_first: bool = False) -> Iterator[pl.DataFrame]:
    """The filtered lake rows, one UTC day at a time, oldest (or newest) first (memory: one org-day)."""
    for day in reversed(flt.dates()) if newest_first else flt.dates():
        part = lk.read_partition(lake, day, flt.organization_id, READ_COLUMNS)
        if part.height:
            yield part.filter(flt.predicate())
