"""The filter language shared by the API, the page, on-demand exports and per-organization daily exports.

In the spirit of GitHub's audit-log search: whitespace-separated terms, each either free text
(a case-insensitive substring of any user-visible column) or a ``qualifier:value``; ``-`` in
front of a term excludes what it matches; ``"double quotes"`` keep spaces and colons together.

    action:CreateJobRun user:alice@acme.com -action:GetJobRunLogs type:"File modifications"
    resource:s3://bucket region:aws-us-west-2 ip:203.0.113.7 created:>=2026-11-01
    created:2026-11-01..2026-11-07 "quoted text"

Repeated positive uses of one qualifier are alternatives (``action:A action:B`` keeps either);
everything else must hold together. ``parse`` turns text into a ``Query`` (or a ``QueryError``
naming the 1-based character position and the reason); ``Query.predicate`` is the one polars
expression every caller filters with.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Callable, Mapping

import polars as pl

from .catalog import ACTION_TYPES, ACTIONS
from .query import BadInput, search_predicate, validate_organization_id


class QueryError(BadInput):
    """The filter text is invalid: ``position`` is the 1-based character where the problem starts."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"at character {position}: {message}")
        self.position = position
        self.reason = message


@dataclass(frozen=True)
class Term:
    """One term of a query: ``field`` is a qualifier name, or ``text`` for free text."""

    field: str
    value: str
    negated: bool
    position: int  # 1-based character where the term starts


@dataclass(frozen=True)
class Query:
    """A parsed filter: its source text and terms; empty text keeps every event."""

    text: str
    terms: tuple[Term, ...] = ()

    def predicate(self) -> pl.Expr:
        """True for lake rows the query keeps (rows need the columns behind ROW_COLUMNS)."""
        keep = pl.lit(True)
        alternatives: dict[str, list[pl.Expr]] = {}
        for term in self.terms:
            match = _term_predicate(term)
            if term.negated:
                keep &= ~match
            elif term.field in _ALTERNATIVE_FIELDS:
                alternatives.setdefault(term.field, []).append(match)
            else:
                keep &= match
        for options in alternatives.values():
            keep &= pl.any_horizontal(options)
        return keep

    def time_bounds(self) -> tuple[datetime | None, datetime | None]:
        """The tightest [lower, upper] that positive ``created:`` terms imply (None: unbounded), to prune days."""
        lower: datetime | None = None
        upper: datetime | None = None
        for term in self.terms:
            if term.field == "created" and not term.negated:
                low, high = _created_range(term)
                lower = low if lower is None or (low is not None and low > lower) else lower
                upper = high if upper is None or (high is not None and high < upper) else upper
        return lower, upper


# --- matching ---------------------------------------------------------------------------------

def _lower(column: str) -> pl.Expr:
    return pl.col(column).str.to_lowercase()


def _equals(column: str) -> Callable[[Term], pl.Expr]:
    return lambda term: (_lower(column) == term.value.lower()).fill_null(False)


def _contains(column: str) -> Callable[[Term], pl.Expr]:
    return lambda term: _lower(column).str.contains(term.value.lower(), literal=True).fill_null(False)


def _created(term: Term) -> pl.Expr:
    low, high = _created_range(term)
    keep = pl.lit(True)
    if low is not None:
        keep &= pl.col("event_time") >= low
    if high is not None:
        keep &= pl.col("event_time") < high
    return keep


_MATCHERS: dict[str, Callable[[Term], pl.Expr]] = {
    "text": lambda term: search_predicate(term.value),
    "action": lambda term: pl.col("action") == term.value,
    "type": lambda term: pl.col("action_type") == term.value,
    "user": _equals("user_email"),
    "resource": _contains("resource"),
    "region": _equals("region"),
    "ip": _equals("ip_address"),
    "created": _created,
}
QUALIFIERS = tuple(name for name in _MATCHERS if name != "text")
_ALTERNATIVE_FIELDS = frozenset({"action", "type", "user", "region", "ip"})


def _term_predicate(term: Term) -> pl.Expr:
    return _MATCHERS[term.field](term)


# --- created: dates and ranges -----------------------------------------------------------------

def _moment(text: str, term: Term, end_of_day: bool) -> datetime:
    """A date (a whole UTC day) or an ISO time with timezone; ``end_of_day`` gives the day's exclusive end."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime.combine(day, time(), UTC)
        return start + timedelta(days=1) if end_of_day else start
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"created: {text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time", term.position) from None
    if moment.tzinfo is None:
        raise QueryError(f"created: time {text!r} has no timezone: add Z or an offset like +02:00", term.position)
    return moment.astimezone(UTC) + (timedelta(microseconds=1) if end_of_day else timedelta())


_COMPARISONS: dict[str, Callable[[str, Term], tuple[datetime | None, datetime | None]]] = {
    ">=": lambda v, t: (_moment(v, t, False), None),
    ">": lambda v, t: (_moment(v, t, True), None),
    "<=": lambda v, t: (None, _moment(v, t, True)),
    "<": lambda v, t: (None, _moment(v, t, False)),
}


def _created_range(term: Term) -> tuple[datetime | None, datetime | None]:
    """``[lower, upper)`` in UTC for a created: value (``>=D``, ``<D``, ``D``, ``D..D``, ``*..D``)."""
    value = term.value
    for operator in (">=", "<=", ">", "<"):
        if value.startswith(operator):
            return _COMPARISONS[operator](value[len(operator):], term)
    if ".." in value:
        first, _, last = value.partition("..")
        low = None if first == "*" else _moment(first, term, False)
        high = None if last == "*" else _moment(last, term, True)
        if low is not None and high is not None and low >= high:
            raise QueryError(f"created: range {value!r} starts after it ends", term.position)
        return low, high
    return _moment(value, term, False), _moment(value, term, True)


# --- parsing ----------------------------------------------------------------------------------

def _read_quoted(text: str, index: int) -> tuple[str, int]:
    """The text inside the quote opening at ``index``, and the index after the closing quote."""
    end = text.find('"', index + 1)
    if end < 0:
        raise QueryError("unterminated quote: add the closing \"", index + 1)
    return text[index + 1:end], end + 1


def _read_word(text: str, index: int) -> tuple[str, int]:
    """A run of characters up to whitespace; a quoted part inside it (e.g. ``type:"A B"``) is kept whole."""
    parts = []
    while index < len(text) and not text[index].isspace():
        if text[index] == '"':
            quoted, index = _read_quoted(text, index)
            parts.append(quoted)
        else:
            end = index
            while end < len(text) and not text[end].isspace() and text[end] != '"':
                end += 1
            parts.append(text[index:end])
            index = end
    return "".join(parts), index


def _canonical(term: Term) -> Term:
    """``term`` with its value checked (and catalog names in their canonical case), or a QueryError."""
    if not term.value:
        raise QueryError(f"{term.field}: needs a value, e.g. {term.field}:{_EXAMPLES[term.field]}", term.position)
    catalog = {"action": list(ACTIONS), "type": list(ACTION_TYPES)}.get(term.field)
    if catalog is not None:
        known = {name.lower(): name for name in catalog}
        if term.value.lower() not in known:
            raise QueryError(f"unknown {term.field} {term.value!r}: use a catalog name, e.g. "
                             f"{term.field}:{_EXAMPLES[term.field]}", term.position)
        return Term(term.field, known[term.value.lower()], term.negated, term.position)
    if term.field == "created":
        _created_range(term)
    return term


_EXAMPLES = {"action": "CreateJobRun", "type": '"File modifications"', "user": "alice@acme.com",
             "resource": "s3://bucket", "region": "aws-us-west-2", "ip": "203.0.113.7", "created": ">=2026-11-01"}


def _term_at(text: str, index: int) -> tuple[Term, int]:
    """The term starting at ``index`` (not whitespace) and the index after it."""
    start = index
    negated = text[index] == "-" and index + 1 < len(text) and not text[index + 1].isspace()
    if negated:
        index += 1
    if text[index] == '"':
        value, index = _read_quoted(text, index)
        return Term("text", value, negated, start + 1), index
    word, end = _read_word(text, index)
    name, colon, value = word.partition(":")
    raw_name = text[index:end].partition(":")[0]
    if not colon or '"' in raw_name or not name:
        return Term("text", word, negated, start + 1), end
    field = name.lower()
    if field not in QUALIFIERS:
        raise QueryError(f"unknown qualifier {name + ':'!r}: use one of "
                         f"{', '.join(q + ':' for q in QUALIFIERS)}, or quote the text to search for it",
                         start + 1)
    return _canonical(Term(field, value, negated, start + 1)), end


def parse(text: str | None) -> Query:
    """Parse filter text into a Query; QueryError (a BadInput) says where and why it is invalid."""
    text = text or ""
    terms = []
    index = 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        term, index = _term_at(text, index)
        if term.value or term.field != "text":
            terms.append(term)
    return Query(text.strip(), tuple(terms))


# --- per-organization daily export filters ------------------------------------------------------

EXPORT_FILTERS_VARIABLE = "AUDIT_EXPORT_FILTERS"
DEFAULT_KEY = "*"


def load_export_filters(path: str | None = None) -> dict[str, Query]:
    """Organization id (or ``*`` for every other one) -> its daily-export query, from a JSON or YAML file.

    ``path`` defaults to $AUDIT_EXPORT_FILTERS; no file means every organization exports every event.
    """
    path = path or os.environ.get(EXPORT_FILTERS_VARIABLE)
    if not path:
        return {}
    with open(path, encoding="utf-8") as handle:
        raw = handle.read()
    if path.endswith((".yaml", ".yml")):
        import yaml

        mapping = yaml.safe_load(raw) or {}
    else:
        mapping = json.loads(raw or "{}")
    if not isinstance(mapping, Mapping):
        raise BadInput(f"{path}: expected a mapping of organization id to query")
    return {_filter_key(key): _parse_for(path, key, value) for key, value in mapping.items()}


def _filter_key(key: object) -> str:
    return DEFAULT_KEY if key == DEFAULT_KEY else validate_organization_id(str(key))


def _parse_for(path: str, key: object, value: object) -> Query:
    try:
        return parse(str(value or ""))
    except QueryError as exc:
        raise BadInput(f"{path}: query for {key}: {exc}") from None


def export_filter_for(filters: Mapping[str, Query], organization_id: str) -> Query:
    """The query an organization's daily export applies (every event when none is configured)."""
    return filters.get(organization_id) or filters.get(DEFAULT_KEY) or Query("")
