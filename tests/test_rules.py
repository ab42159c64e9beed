"""Every validation rule, its precedence, and the edges of time handling."""

import ipaddress
import random
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from include.audit.events import (
    EMAIL_PATTERN,
    FIELD_BYTES,
    IP_PATTERN,
    NOT_BLANK_PATTERN,
    ORGANIZATION_ID_PATTERN,
    REASONS,
    RULES,
    Window,
    expectations,
    normalize,
    parse_timestamp,
    route,
)
from include.audit.raw import PARSED_SCHEMA

from .helpers import event

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def routed(*events: dict, now: datetime = NOW) -> pl.DataFrame:
    rows = [
        {
            **{c: None for c in PARSED_SCHEMA},
            **e,
            "attributes": None,
            "source_file": "f",
            "line_number": i,
        }
        for i, e in enumerate(events, 1)
    ]
    return route(pl.DataFrame(rows, schema=PARSED_SCHEMA), Window(now))


def reason_of(**overrides) -> str | None:
    return routed(event(**overrides))["reason"][0]


def test_a_valid_event_has_no_reason():
    frame = routed(event())
    assert frame["reason"][0] is None and frame["detail"][0] is None


@pytest.mark.parametrize("field", ["event_id", "event_time", "organization_id", "user_email", "action", "ip_address"])
@pytest.mark.parametrize("value", [None, ""])
def test_missing_required_field(field, value):
    frame = routed(event(**{field: value}))
    assert frame["reason"][0] == "missing_field"
    assert field in frame["detail"][0]


@pytest.mark.parametrize("field", ["resource", "user_agent", "region"])
@pytest.mark.parametrize("value", [None, ""])
def test_optional_fields_may_be_empty_and_normalize_to_null(field, value):
    frame = routed(event(**{field: value}))
    assert frame["reason"][0] is None
    assert normalize(frame)[field][0] is None


@pytest.mark.parametrize("action", ["DeleteEverything", "createjobrun", "CreateJobRun ", "Job Run"])
def test_unknown_action(action):
    assert reason_of(action=action) == "unknown_action"


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-25",
        "2026-11-25T10:00:00",
        "2026-11-25 10:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-25T10:00:00.1234567Z",
        "2026-11-25T10:00:00+0100",
        "yesterday",
        "1764064800",
        "２０２６-11-25T10:00:00Z",
    ],
)
def test_invalid_timestamp(value):
    assert reason_of(event_time=value) == "invalid_timestamp"


@pytest.mark.parametrize(
    "value, expected_utc",
    [
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00.5+05:30", datetime(2026, 11, 25, 4, 30, 0, 500000, tzinfo=UTC)),
        ("2026-11-25T23:30:00-02:00", datetime(2026, 11, 26, 1, 30, tzinfo=UTC)),  # next UTC day
        ("2026-11-26T00:30:00+01:00", datetime(2026, 11, 25, 23, 30, tzinfo=UTC)),  # previous UTC day
        ("2026-11-25T10:00:00.123456Z", datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_timestamps_become_utc_and_partition_by_utc_date(value, expected_utc):
    frame = normalize(routed(event(event_time=value)))
    assert frame["event_time"][0] == expected_utc
    assert frame["event_time"].dt.date()[0] == expected_utc.date()


@pytest.mark.parametrize(
    "org, ok",
    [
        ("acme", True),
        ("A", True),
        ("0rg_1-x", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("-acme", False),
        ("_acme", False),
        ("../etc", False),
        ("acme corp", False),
        ("acme/x", False),
        ("acmé", False),
        ("acme\n", False),
    ],
)
def test_organization_id(org, ok):
    assert reason_of(organization_id=org) == (None if ok else "invalid_organization_id")


@pytest.mark.parametrize(
    "ip, ok",
    [
        ("203.0.113.7", True),
        ("0.0.0.0", True),
        ("255.255.255.255", True),
        ("2001:db8::1", True),
        ("::", True),
        ("::1", True),
        ("::ffff:192.0.2.1", True),
        ("2001:0db8:0000:0000:0000:ff00:0042:8329", True),
        ("256.1.1.1", False),
        ("1.2.3", False),
        ("01.2.3.4", False),
        ("1.2.3.4.5", False),
        ("2001:db8::g", False),
        ("1::2::3", False),
        ("1:2:3:4:5:6:7:8:9", False),
        ("not-an-ip", False),
        (" 1.2.3.4", False),
    ],
)
def test_ip_address(ip, ok):
    assert reason_of(ip_address=ip) == (None if ok else "invalid_ip")


def test_ip_pattern_agrees_with_the_standard_library_on_random_addresses():
    rng = random.Random(3)
    values = []
    for _ in range(3000):
        v6 = ipaddress.IPv6Address(rng.getrandbits(128) & rng.choice([2**128 - 1, 2**64 - 1, 2**16 - 1]))
        values += [str(v6), v6.exploded, str(ipaddress.IPv4Address(rng.getrandbits(32)))]
    assert pl.Series(values).str.contains(IP_PATTERN).all()


@pytest.mark.parametrize(
    "email, ok",
    [
        ("alice@acme.com", True),
        ("a@b", True),
        ("alice", False),
        ("alice@@acme.com", False),
        ("@acme.com", False),
        ("alice@", False),
        ("a@b@c", False),
    ],
)
def test_email(email, ok):
    assert reason_of(user_email=email) == (None if ok else "invalid_email")
    assert bool(re.match(EMAIL_PATTERN, email)) == ok


def test_retention_boundary_is_by_utc_date():
    oldest_kept = NOW.date() - timedelta(days=90)
    assert reason_of(event_time=f"{oldest_kept}T00:00:00Z") is None
    assert reason_of(event_time=f"{oldest_kept - timedelta(days=1)}T23:59:59.999999Z") == "outside_retention"
    # 00:30+01:00 on the oldest day is 23:30 UTC the day before: outside
    assert reason_of(event_time=f"{oldest_kept}T00:30:00+01:00") == "outside_retention"


def test_future_tolerance_is_15_minutes():
    assert reason_of(event_time="2026-11-26T12:15:00Z") is None
    assert reason_of(event_time="2026-11-26T12:15:00.000001Z") == "future_timestamp"
    assert reason_of(event_time="2026-11-26T13:00:00+01:00") is None  # 12:00 UTC


def test_first_broken_rule_wins():
    # broken in every row-local way at once: missing_field comes first
    assert reason_of(event_id="", action="Nope", ip_address="x", user_email="y") == "missing_field"
    assert reason_of(action="Nope", event_time="bad", ip_address="x") == "unknown_action"
    assert reason_of(event_time="bad", organization_id="../x", ip_address="x") == "invalid_timestamp"
    assert reason_of(organization_id="../x", ip_address="x", user_email="y") == "invalid_organization_id"
    assert reason_of(ip_address="x", user_email="y", event_time="2020-01-01T00:00:00Z") == "invalid_ip"
    assert reason_of(user_email="y", event_time="2020-01-01T00:00:00Z") == "invalid_email"


def test_reasons_are_in_the_documented_order():
    assert REASONS == (
        "line_too_large",
        "too_deeply_nested",
        "malformed_json",
        "invalid_type",
        "missing_field",
        "field_too_large",
        "unknown_action",
        "invalid_timestamp",
        "invalid_organization_id",
        "invalid_ip",
        "invalid_email",
        "outside_retention",
        "future_timestamp",
        "conflicting_duplicate",
        "file_too_large",
        "unreadable_file",
    )


def test_readme_lists_the_reasons_in_precedence_order():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Validation and quarantine", 1)[1].split("\n## ", 1)[0]
    positions = [section.find(f"`{reason}`") for reason in REASONS]
    assert -1 not in positions and positions == sorted(positions)


@pytest.mark.parametrize("field", ["event_id", "organization_id", "user_email", "action", "ip_address"])
@pytest.mark.parametrize("value", [" ", "\t \n", "\u00a0", "\u3000", "\u2028"])
def test_whitespace_only_required_field_is_missing(field, value):
    frame = routed(event(**{field: value}))
    assert frame["reason"][0] == "missing_field" and field in frame["detail"][0]


def test_whitespace_inside_a_value_is_kept():
    assert reason_of(event_id=" e 1 ") is None


@pytest.mark.parametrize(
    "field, limit", [("resource", 8192), ("user_agent", 8192), ("event_id", 256), ("user_email", 256), ("region", 256)]
)
def test_field_too_large_at_its_byte_limit(field, limit):
    at_limit = "a@" + "b" * (limit - 2) if field == "user_email" else "x" * limit
    assert reason_of(**{field: at_limit}) is None
    frame = routed(event(**{field: at_limit + "x"}))
    assert frame["reason"][0] == "field_too_large"
    assert frame["detail"][0] == f"{field} is {limit + 1} bytes (limit {limit})"


def test_field_size_counts_utf8_bytes_and_follows_the_window():
    assert reason_of(resource="é" * 4097) == "field_too_large"  # 8,194 bytes, 4,097 characters
    frame = route(
        routed(event(resource="x" * 20)).select(list(PARSED_SCHEMA)), Window(NOW, field_bytes={"resource": 10})
    )
    assert frame["reason"][0] == "field_too_large"


def test_field_too_large_comes_after_missing_field_and_before_the_formats():
    assert reason_of(event_id="", resource="x" * 9000) == "missing_field"
    assert reason_of(action="x" * 300) == "field_too_large"


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-25T23:59:60Z",
        "2026-11-25T23:59:60.5Z",
        "2026-12-31T23:59:60+00:00",
        "2026-11-25T24:00:00Z",
        "2026-11-25T10:60:00Z",
    ],
)
def test_leap_seconds_and_out_of_range_clock_fields_are_invalid(value):
    assert reason_of(event_time=value) == "invalid_timestamp"


def test_ge_checks_the_same_blank_and_size_rules():
    suite = expectations(Window(NOW))
    regexes = {(e.column, e.regex) for e in suite if type(e).__name__ == "ExpectColumnValuesToMatchRegex"}
    assert ("event_id", NOT_BLANK_PATTERN) in regexes
    sizes = {e.column: e.max_value for e in suite if type(e).__name__ == "ExpectColumnValueLengthsToBeBetween"}
    # every text field's limit; event_time is a timestamp in the lake (its raw text limit is routing's)
    assert sizes == {c: n for c, n in FIELD_BYTES.items() if c != "event_time"}
    # the pattern means the same to polars (the router) and to Python's re (Great Expectations)
    for value in [" ", "\x1c", "\u200b", "\u00a0", "a", "\u3000x"]:
        assert bool(re.search(NOT_BLANK_PATTERN, value)) == pl.Series([value]).str.contains(NOT_BLANK_PATTERN)[0]


def test_ge_suite_is_generated_from_the_same_rules():
    window = Window(NOW)
    suite = expectations(window)
    kinds = {type(e).__name__ for e in suite}
    assert {
        "ExpectColumnValuesToBeInSet",
        "ExpectColumnValuesToNotBeNull",
        "ExpectColumnValuesToMatchRegex",
        "ExpectColumnValuesToBeUnique",
        "ExpectColumnMinToBeBetween",
        "ExpectColumnMaxToBeBetween",
    } <= kinds
    regexes = {
        e.column: e.regex
        for e in suite
        if type(e).__name__ == "ExpectColumnValuesToMatchRegex" and e.regex != NOT_BLANK_PATTERN
    }
    assert regexes == {
        "organization_id": ORGANIZATION_ID_PATTERN,
        "ip_address": IP_PATTERN,
        "user_email": EMAIL_PATTERN,
    }
    assert [r.reason for r in RULES][-1] == "conflicting_duplicate"


def test_window_dates():
    w = Window(datetime(2026, 11, 26, 0, 5, tzinfo=UTC), retention_days=90)
    assert w.oldest_date == date(2026, 8, 28)
    assert w.latest_time == datetime(2026, 11, 26, 0, 20, tzinfo=UTC)


def _admitted_times(count: int, seed: int) -> list[str]:
    """Random values of every shape the timestamp pattern admits: any year, 1-6 fraction digits, Z or
    any offset up to ±23:59."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        fraction = "" if rng.random() < 0.3 else "." + "".join(rng.choices("0123456789", k=rng.randint(1, 6)))
        zone = rng.choice(["Z", f"{rng.choice('+-')}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"])
        out.append(
            f"{rng.randint(0, 9999):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{fraction}{zone}"
        )
    return out


def test_the_fast_and_the_careful_time_parsers_agree():
    """A column is parsed by Arrow's ISO 8601 cast at once; a column holding one impossible date
    (February 30th) takes polars' format-driven parser instead. Both give the same instant."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = [*_admitted_times(5000, seed=8), "0000-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999-23:59"]
    fast = pl.Series(pc.cast(pa.array(values), pa.timestamp("us", "UTC")))  # raises if Arrow refused one
    frame = pl.DataFrame({"event_time": [*values, "2026-02-30T00:00:00Z"]})
    careful = frame.select(parse_timestamp(pl.col("event_time")))["event_time"]
    assert careful[-1] is None
    assert careful.head(len(values)).cast(pl.Int64).to_list() == fast.cast(pl.Int64).to_list()
    assert pl.DataFrame({"t": values}).select(parse_timestamp(pl.col("t")))["t"].equals(fast, check_names=False)
