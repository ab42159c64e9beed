"""User-input validation: one parser per kind of value, every bad value a one-line BadInput."""

from datetime import UTC, date, datetime

import pytest

from include.audit import cli
from include.audit.inputs import MAX_RANGE, BadInput, check_range, parse_date, parse_time, validate_organization_id


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-11-01T00:00:00Z", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T02:00:00+02:00", datetime(2026, 11, 1, tzinfo=UTC)),
        (" 2026-11-01T00:00:00.5Z ", datetime(2026, 11, 1, 0, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_parse_time_gives_aware_utc(text, expected):
    parsed = parse_time(text)
    assert parsed == expected and parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text, reason",
    [
        ("2026-11-01T00:00:00", "has no timezone"),
        ("yesterday", "is not an ISO 8601 time"),
        ("2026-11-01T00:00:00Z\x00", "control character"),
        ("2026-11-01T00:00:00Z\n", "control character"),
        ("0001-01-01T00:00:00+23:59", "outside the years 1-9999"),
        ("9999-12-31T23:59:59-23:59", "outside the years 1-9999"),
        (None, "is not an ISO 8601 time"),
        ("", "is not an ISO 8601 time"),
    ],
)
def test_parse_time_refuses_with_a_reason(text, reason):
    with pytest.raises(BadInput, match=reason):
        parse_time(text, "startTime")


def test_extreme_but_representable_times_parse():
    assert parse_time("0001-01-01T00:00:00Z").year == 1
    assert parse_time("9999-12-31T23:59:59Z").year == 9999


@pytest.mark.parametrize(
    "text",
    [
        "20261125",
        "2026-W48-3",
        "2026-11-25T00:00:00Z",
        "2026-11-25\x00",
        "26-11-25",
        "2026-13-01",
        " 2026-11-25",
        "２０２６-11-25",
        "",
    ],
)
def test_parse_date_accepts_only_yyyy_mm_dd(text):
    with pytest.raises(BadInput, match="date"):
        parse_date(text, "date")


def test_parse_date():
    assert parse_date("2026-11-25") == date(2026, 11, 25)
    assert parse_date("0001-01-01") == date(1, 1, 1) and parse_date("9999-12-31") == date(9999, 12, 31)


@pytest.mark.parametrize("value", ["acme", "A", "007", "a" * 64, "acme_corp-1"])
def test_valid_organization_ids(value):
    assert validate_organization_id(value) == value


@pytest.mark.parametrize("value", ["", "../etc", "-acme", "_x", "a" * 65, "acme\n", "a/b", "ac me", None, 7])
def test_invalid_organization_ids(value):
    with pytest.raises(BadInput, match="invalid organization id"):
        validate_organization_id(value)


def test_check_range_caps_the_span():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    check_range(start, start + MAX_RANGE)
    with pytest.raises(BadInput, match="longer than 366 days"):
        check_range(start, start + MAX_RANGE + MAX_RANGE / MAX_RANGE.days)
    with pytest.raises(BadInput, match="is after"):
        check_range(start, start.replace(year=2025))


def test_on_demand_dag_takes_the_organization_pattern_from_events():
    from pathlib import Path

    from include.audit.events import ORGANIZATION_ID_PATTERN

    text = (Path(__file__).parents[1] / "dags" / "audit_export_on_demand.py").read_text()
    assert "pattern=ORGANIZATION_ID_PATTERN" in text and "{0,63}" not in text
    assert ORGANIZATION_ID_PATTERN.endswith("$")


@pytest.mark.parametrize(
    "start, end",
    [
        ("0001-01-01T00:00:00+23:59", "2026-11-01T00:00:00Z"),
        ("2026-11-01T00:00:00Z", "9999-12-31T23:59:59-23:59"),
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),  # representable, but far past the range cap
        ("2026-11-01T00:00:00Z\x00", "2026-11-02T00:00:00Z"),
    ],
)
def test_cli_export_refuses_extreme_times_with_exit_2(tmp_path, capsys, start, end):
    code = cli.main(
        [
            "export",
            "--lake-root",
            str(tmp_path / "lake"),
            "--org",
            "acme",
            "--start",
            start,
            "--end",
            end,
            "--out",
            str(tmp_path / "out.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.csv").exists()
