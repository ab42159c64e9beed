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
expression that says what a query keeps, and ``Query.apply`` evaluates it on a frame with each
column lowercased once. Cost is bounded before anything runs: at most MAX_QUERY_CHARS characters
and MAX_TERMS terms, identical terms evaluated once, so work is linear in (terms x rows).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from .catalog import ACTION_TYPES, ACTIONS
from .inputs import BadInput, day_end, day_start, parse_date, parse_time, validate_organization_id

MAX_QUERY_CHARS = 1024
"""The longest filter text accepted: longer is a QueryError (HTTP 400, exit 2)."""
MAX_TERMS = 32
"""The most terms one filter may have (convenience fields translated into terms count too)."""

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
"""The columns a user sees (CSV header, API fields, page), as expressions over lake rows; free text searches these."""


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

    def key(self) -> tuple[str, str, bool]:
        """What the term means, regardless of where it was written: identical terms are evaluated once."""
        return self.field, self.value if self.field in _CASE_SENSITIVE else self.value.lower(), self.negated


@dataclass(frozen=True)
class Query:
    """A parsed filter: its source text and terms; empty text keeps every event."""

    text: str
    terms: tuple[Term, ...] = ()

    def predicate(self) -> pl.Expr:
        """True for lake rows the query keeps (rows need the columns behind ROW_COLUMNS).

        Self-contained; ``apply`` gives the same rows and lowercases each column only once per frame.
        """
        return _predicate(self.terms, _PREPARED)

    def apply(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of ``frame`` the query keeps, in work linear in (distinct terms x rows)."""
        if not self.terms:
            return frame
        needed = {column for term in self.terms for column in _NEEDS[term.field]}
        prepared = frame.with_columns(expr.alias(column) for column, expr in _PREPARED.items() if column in needed)
        kept = prepared.filter(_predicate(self.terms, {column: pl.col(column) for column in needed}))
        return kept.drop(needed)

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

    def with_fields(
        self,
        search: str | None = None,
        users: Iterable[str] = (),
        actions: Iterable[str] = (),
        search_name: str = "search",
    ) -> Query:
        """This query plus the convenience fields of the CLI, trigger form and API, as the terms they mean.

        ``search`` is one free-text term (its whole text, spaces included), each user a ``user:`` term
        and each action an ``action:`` term; so ``--user a --user b`` keeps either user, as ``user:a user:b``.
        A bad field is a BadInput naming it (``search_name`` is what the caller calls the search field).
        """
        extra = [Term("text", search, False, 0)] if search and search.strip() else []
        extra += [Term("user", u.strip(), False, 0) for u in users if u.strip()]
        extra += [Term("action", a.strip(), False, 0) for a in actions if a.strip()]
        if not extra:
            return self
        terms = list(self.terms)
        for term in extra:
            label = search_name if term.field == "text" else term.field
            try:
                _check_text(term.value)
                terms.append(_canonical(term))
            except QueryError as exc:
                raise BadInput(f"{label}: {exc.reason}") from None
        if len(terms) > MAX_TERMS:
            raise BadInput(
                f"the filter has {len(terms)} terms with its search, user and action fields: at most {MAX_TERMS}"
            )
        return Query(self.text, tuple(terms))


# --- matching ---------------------------------------------------------------------------------
# Matching runs on "prepared" columns: each column a term reads, lowercased once per frame (free
# text reads one NUL-joined column of everything visible; NUL cannot occur in a query).

_PREPARED: dict[str, pl.Expr] = {
    "__text": pl.concat_str(list(ROW_COLUMNS.values()), separator="\x00", ignore_nulls=True).str.to_lowercase(),
    "__user": pl.col("user_email").str.to_lowercase(),
    "__resource": pl.col("resource").str.to_lowercase(),
    "__region": pl.col("region").str.to_lowercase(),
    "__ip": pl.col("ip_address").str.to_lowercase(),
}
_NEEDS: dict[str, tuple[str, ...]] = {
    "text": ("__text",),
    "user": ("__user",),
    "resource": ("__resource",),
    "region": ("__region",),
    "ip": ("__ip",),
    "action": (),
    "type": (),
    "created": (),
}
_EQUALS: dict[str, Callable[[Mapping[str, pl.Expr]], pl.Expr]] = {
    "action": lambda cols: pl.col("action"),
    "type": lambda cols: pl.col("action_type"),
    "user": lambda cols: cols["__user"],
    "region": lambda cols: cols["__region"],
    "ip": lambda cols: cols["__ip"],
}
"""Qualifiers that compare a whole column: repeated positive uses are alternatives (one is_in)."""
_CONTAINS: dict[str, str] = {"text": "__text", "resource": "__resource"}
_CASE_SENSITIVE = frozenset({"action", "type", "created"})  # catalog names are canonical; times parse


def _created(term: Term) -> pl.Expr:
    low, high = _created_range(term)
    keep = pl.lit(True)
    if low is not None:
        keep &= pl.col("event_time") >= low
    if high is not None:
        keep &= pl.col("event_time") < high
    return keep


def _predicate(terms: Iterable[Term], cols: Mapping[str, pl.Expr]) -> pl.Expr:
    """AND of every distinct term; a qualifier's positive equality terms are alternatives (one is_in each)."""
    distinct = {term.key(): term for term in terms}.values()
    keep = pl.lit(True)
    wanted: dict[tuple[str, bool], list[str]] = {}
    for term in distinct:
        if term.field in _EQUALS:
            value = term.value if term.field in _CASE_SENSITIVE else term.value.lower()
            wanted.setdefault((term.field, term.negated), []).append(value)
            continue
        if term.field == "created":
            match = _created(term)
        else:
            match = cols[_CONTAINS[term.field]].str.contains(term.value.lower(), literal=True).fill_null(False)
        keep &= ~match if term.negated else match
    for (field, negated), values in wanted.items():
        match = _EQUALS[field](cols).is_in(values).fill_null(False)
        keep &= ~match if negated else match
    return keep


QUALIFIERS = ("action", "type", "user", "resource", "region", "ip", "created")


# --- created: dates and ranges -----------------------------------------------------------------

_DATE_LIKE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def _moment(text: str, term: Term, end_of_day: bool) -> datetime:
    """A date (a whole UTC day) or an ISO time with timezone; ``end_of_day`` gives the day's exclusive end."""
    try:
        if _DATE_LIKE.fullmatch(text):
            day = parse_date(text, "created:")
            return day_end(day) if end_of_day else day_start(day)
        moment = parse_time(text, "created:")
    except BadInput as exc:
        raise QueryError(str(exc), term.position) from None
    if end_of_day:
        return moment + timedelta(microseconds=1) if moment < datetime.max.replace(tzinfo=UTC) else moment
    return moment


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
            return _COMPARISONS[operator](value[len(operator) :], term)
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
        raise QueryError('unterminated quote: add the closing "', index + 1)
    return text[index + 1 : end], end + 1


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
            raise QueryError(
                f"unknown {term.field} {term.value!r}: use a catalog name, e.g. {term.field}:{_EXAMPLES[term.field]}",
                term.position,
            )
        return Term(term.field, known[term.value.lower()], term.negated, term.position)
    if term.field == "created":
        _created_range(term)
    return term


_EXAMPLES = {
    "action": "CreateJobRun",
    "type": '"File modifications"',
    "user": "alice@acme.com",
    "resource": "s3://bucket",
    "region": "aws-us-west-2",
    "ip": "203.0.113.7",
    "created": ">=2026-11-01",
}


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
        raise QueryError(
            f"unknown qualifier {name + ':'!r}: use one of "
            f"{', '.join(q + ':' for q in QUALIFIERS)}, or quote the text to search for it",
            start + 1,
        )
    return _canonical(Term(field, value, negated, start + 1)), end


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, LF and CR are whitespace


def _check_text(text: str) -> None:
    """QueryError unless ``text`` is within MAX_QUERY_CHARS and free of control characters."""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is {len(text)} characters long: at most {MAX_QUERY_CHARS}", MAX_QUERY_CHARS + 1)
    control = _CONTROL.search(text)
    if control:
        raise QueryError(f"control character {control.group()!r} is not allowed", control.start() + 1)


def parse(text: str | None) -> Query:
    """Parse filter text into a Query; QueryError (a BadInput) says where and why it is invalid.

    At most MAX_QUERY_CHARS characters and MAX_TERMS terms, so a query's cost is bounded before it runs.
    """
    text = text or ""
    _check_text(text)
    terms: list[Term] = []
    index = 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        term, index = _term_at(text, index)
        if term.value or term.field != "text":
            if len(terms) == MAX_TERMS:
                raise QueryError(f"more than {MAX_TERMS} terms: narrow the query", term.position)
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
