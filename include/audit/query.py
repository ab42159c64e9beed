"""Reading events back: one organization's filtered events, a day at a time, within a bounded budget.

A filter is (organization, time range, ``Query``); CLI, DAGs, API and page all read through it.
Reads are pruned by partition: an organization's time range touches only its partitions for the
dates it spans (narrowed further by the query's ``created:`` bounds), never the whole lake.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import polars as pl

from . import lake as lk
from .filters import ROW_COLUMNS, Query
from .inputs import BadInput, check_range, validate_organization_id
from .storage import Root

__all__ = ["READ_COLUMNS", "ROW_COLUMNS", "Budget", "BudgetExceeded", "EventFilter", "iter_days", "rows"]

READ_COLUMNS = [
    "event_id",
    "event_time",
    "user_email",
    "action",
    "action_type",
    "resource",
    "ip_address",
    "user_agent",
    "region",
]


@dataclass(frozen=True)
class EventFilter:
    """Which events of one organization to show or export: times are inclusive bounds, ``query`` the rest."""

    organization_id: str
    start: datetime
    end: datetime
    query: Query = field(default_factory=lambda: Query(""))

    def __post_init__(self) -> None:
        validate_organization_id(self.organization_id)
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None:
                raise BadInput(f"{name} {value.isoformat()} has no timezone")
        check_range(self.start, self.end)

    @classmethod
    def from_fields(
        cls,
        organization_id: str,
        start: datetime,
        end: datetime,
        query: Query | None = None,
        search: str | None = None,
        users: Iterable[str] = (),
        actions: Iterable[str] = (),
    ) -> EventFilter:
        """A filter from the convenience fields of the CLI, trigger form and API, translated into query terms."""
        return cls(organization_id, start, end, (query or Query("")).with_fields(search, users, actions))

    def dates(self) -> list[date]:
        """The UTC event dates the range touches (its partitions), narrowed by the query's created: bounds."""
        lower, upper = self.query.time_bounds()
        first = max(self.start, lower or self.start).astimezone(UTC).date()
        last = min(self.end, upper or self.end).astimezone(UTC).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def predicate(self) -> pl.Expr:
        """True for lake rows (with organization_id) that the filter keeps."""
        in_range = pl.col("event_time").is_between(self.start.astimezone(UTC), self.end.astimezone(UTC), closed="both")
        return in_range & self.query.predicate() if self.query.terms else in_range

    def apply(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of ``frame`` (lake rows with organization_id) the filter keeps; same rows as ``predicate``."""
        in_range = frame.filter(
            pl.col("event_time").is_between(self.start.astimezone(UTC), self.end.astimezone(UTC), closed="both")
        )
        return self.query.apply(in_range)


class BudgetExceeded(Exception):
    """A read went past its budget (time or rows scanned): the API answers 503, the CLI exits 1."""


@dataclass
class Budget:
    """Bounds one request's work: wall-clock seconds and lake rows scanned (None: unbounded)."""

    seconds: float | None = None
    rows: int | None = None
    started: float = field(default_factory=time.monotonic)
    scanned: int = 0

    def charge(self, rows: int) -> None:
        """Count ``rows`` as scanned; BudgetExceeded once either bound is passed."""
        self.scanned += rows
        if self.rows is not None and self.scanned > self.rows:
            raise BudgetExceeded(
                f"the request would scan more than {self.rows:,} events: narrow the time range or the query"
            )
        if self.seconds is not None and time.monotonic() - self.started > self.seconds:
            raise BudgetExceeded(f"the request took longer than {self.seconds:g} s: narrow the time range or the query")


def rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Lake rows -> the user-visible columns, sorted by time then event_id."""
    return frame.sort("event_time", "event_id").select(expr.alias(name) for name, expr in ROW_COLUMNS.items())


def iter_days(
    lake: Root, flt: EventFilter, newest_first: bool = False, budget: Budget | None = None
) -> Iterator[pl.DataFrame]:
    """The filtered lake rows, one UTC day at a time, oldest (or newest) first (memory: one org-day).

    With a ``budget``, each day's rows are charged before and after filtering it, so a request stops
    within about one organization-day of work past its bound.
    """
    for day in reversed(flt.dates()) if newest_first else flt.dates():
        part = lk.read_partition(lake, day, flt.organization_id, READ_COLUMNS)
        if budget is not None:
            budget.charge(part.height)
        if part.height:
            kept = flt.apply(part)
            if budget is not None:
                budget.charge(0)
            yield kept
