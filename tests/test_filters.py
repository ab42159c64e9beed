"""The filter language: parsing (terms, quoting, negation, positions of errors) and what each term keeps."""

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from include.audit.filters import QueryError, Term, export_filter_for, load_export_filters, parse
from include.audit.inputs import BadInput
from include.audit.query import EventFilter


def lake_rows() -> pl.DataFrame:
    """Four lake-shaped rows, distinct in every column a qualifier reads."""
    return pl.DataFrame(
        {
            "event_id": ["e1", "e2", "e3", "e4"],
            "event_time": [
                datetime(2026, 11, 1, 0, 0, tzinfo=UTC),
                datetime(2026, 11, 1, 23, 59, 59, tzinfo=UTC),
                datetime(2026, 11, 7, 12, tzinfo=UTC),
                datetime(2026, 11, 8, 0, 0, tzinfo=UTC),
            ],
            "organization_id": ["acme"] * 4,
            "user_email": ["Alice@Acme.com", "bob@acme.com", "alice@acme.com", "carol@acme.com"],
            "action": ["CreateJobRun", "GetJobRunLogs", "UploadFile", "DeleteUser"],
            "action_type": ["Job Run", "Job Run", "File modifications", "Organization Settings"],
            "resource": ["job-run/1", "job-run/2", "s3://bucket/data/x.parquet", None],
            "ip_address": ["203.0.113.7", "2001:db8::1", "198.51.100.2", "203.0.113.70"],
            "user_agent": ["curl/8.0", "python-requests/2.32", "Mozilla/5.0 quoted text here", "curl/8.0"],
            "region": ["aws-us-west-2", "aws-eu-west-1", "aws-us-west-2", "aws-us-east-1"],
        }
    ).with_columns(pl.col("event_time").cast(pl.Datetime("us", "UTC")))


def kept(text: str) -> list[str]:
    return lake_rows().filter(parse(text).predicate())["event_id"].to_list()


def test_the_issue_example_parses_into_its_terms():
    text = (
        'action:CreateJobRun user:alice@acme.com -action:GetJobRunLogs type:"File modifications" '
        "resource:s3://bucket region:aws-us-west-2 ip:203.0.113.7 created:>=2026-11-01 "
        'created:2026-11-01..2026-11-07 "quoted text"'
    )
    terms = parse(text).terms
    assert [(t.field, t.value, t.negated) for t in terms] == [
        ("action", "CreateJobRun", False),
        ("user", "alice@acme.com", False),
        ("action", "GetJobRunLogs", True),
        ("type", "File modifications", False),
        ("resource", "s3://bucket", False),
        ("region", "aws-us-west-2", False),
        ("ip", "203.0.113.7", False),
        ("created", ">=2026-11-01", False),
        ("created", "2026-11-01..2026-11-07", False),
        ("text", "quoted text", False),
    ]
    assert [t.position for t in terms][:3] == [1, 21, 41]
    assert text[terms[3].position - 1 :].startswith('type:"File')


@pytest.mark.parametrize("text", ["", "   ", '""', None])
def test_empty_text_keeps_everything(text):
    assert parse(text).terms == ()
    assert kept(text) == ["e1", "e2", "e3", "e4"]


@pytest.mark.parametrize(
    "text, ids",
    [
        ("action:CreateJobRun", ["e1"]),
        ("action:createjobrun", ["e1"]),  # catalog names in any case
        ("action:CreateJobRun action:UploadFile", ["e1", "e3"]),  # one qualifier repeated: either
        ("-action:GetJobRunLogs", ["e1", "e3", "e4"]),
        ("-action:GetJobRunLogs -action:DeleteUser", ["e1", "e3"]),
        ('type:"Job Run"', ["e1", "e2"]),
        ('-type:"Job Run"', ["e3", "e4"]),
        ("user:alice@acme.com", ["e1", "e3"]),  # case-insensitive, whole address
        ("user:alice", []),
        ("resource:s3://bucket", ["e3"]),  # a substring of the resource
        ("resource:JOB-RUN", ["e1", "e2"]),
        ("-resource:job-run", ["e3", "e4"]),  # a missing resource is not excluded
        ("region:aws-us-west-2", ["e1", "e3"]),
        ("ip:203.0.113.7", ["e1"]),  # exact: 203.0.113.70 differs
        ("ip:2001:db8::1", ["e2"]),
        ("created:2026-11-01", ["e1", "e2"]),  # a whole UTC day
        ("created:>=2026-11-07", ["e3", "e4"]),
        ("created:>2026-11-07", ["e4"]),
        ("created:<2026-11-07", ["e1", "e2"]),
        ("created:<=2026-11-07", ["e1", "e2", "e3"]),
        ("created:2026-11-01..2026-11-07", ["e1", "e2", "e3"]),  # both ends inclusive
        ("created:*..2026-11-01", ["e1", "e2"]),
        ("created:2026-11-07..*", ["e3", "e4"]),
        ("created:>=2026-11-01T23:59:59Z", ["e2", "e3", "e4"]),
        ("created:<2026-11-02T00:59:59+01:00", ["e1"]),
        ("curl", ["e1", "e4"]),  # free text: any column, case-insensitive
        ("CURL carol", ["e4"]),  # free-text words must all match
        ('"quoted text"', ["e3"]),
        ("quoted text", ["e3"]),
        ("-curl", ["e2", "e3"]),
        ('-"job run"', ["e3", "e4"]),
        ('"action:CreateJobRun"', []),  # quoted: text, not a qualifier
        ("user:alice@acme.com -action:UploadFile created:2026-11-01", ["e1"]),
        ('Type:"File modifications" REGION:AWS-US-WEST-2', ["e3"]),  # qualifier names in any case
    ],
)
def test_each_term_keeps_what_it_says(text, ids):
    assert kept(text) == ids


def test_qualifier_value_may_be_quoted_partly_and_keeps_spaces():
    assert parse('type:"File modifications"').terms == (Term("type", "File modifications", False, 1),)
    assert parse('resource:"s3://my bucket"').terms[0].value == "s3://my bucket"


def test_lone_dash_is_text_and_positions_count_from_one():
    assert parse("a - b").terms == (
        Term("text", "a", False, 1),
        Term("text", "-", False, 3),
        Term("text", "b", False, 5),
    )


@pytest.mark.parametrize(
    "text, position, reason",
    [
        ("foo:bar", 1, "unknown qualifier 'foo:'"),
        ("action:CreateJobRun  actor:alice", 22, "unknown qualifier 'actor:'"),
        ("x -nope:1", 3, "unknown qualifier 'nope:'"),
        ("s3://bucket", 1, "quote the text"),
        ("action:Nope", 1, "unknown action 'Nope'"),
        ('a type:"Jobs"', 3, "unknown type 'Jobs'"),
        ("user:", 1, "needs a value"),
        ("created:yesterday", 1, "is not an ISO 8601 time"),
        ("created:>=2026-13-01", 1, "is not a date"),
        ("created:2026-11-01T00:00:00", 1, "has no timezone"),
        ("created:2026-11-07..2026-11-01", 1, "starts after it ends"),
        ('ok "unterminated', 4, "unterminated quote"),
        ('type:"File', 6, "unterminated quote"),
    ],
)
def test_errors_say_where_and_why(text, position, reason):
    with pytest.raises(QueryError) as caught:
        parse(text)
    assert caught.value.position == position
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"at character {position}: ")
    assert isinstance(caught.value, BadInput)  # the CLI's exit 2 and the API's 400


def test_event_filter_ands_the_query_and_prunes_days_by_created():
    flt = EventFilter(
        "acme",
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 30, tzinfo=UTC),
        query=parse("created:2026-11-01..2026-11-02 -action:GetJobRunLogs"),
    )
    # only the partitions the created: range touches (its exclusive end is midnight of the 3rd)
    assert [d.isoformat() for d in flt.dates()] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert lake_rows().filter(flt.predicate())["event_id"].to_list() == ["e1"]
    narrow = EventFilter(
        "acme", datetime(2026, 11, 1, 12, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC), query=parse("alice")
    )
    assert lake_rows().filter(narrow.predicate())["event_id"].to_list() == ["e3"]


def test_export_filters_file_maps_organizations_to_queries(tmp_path):
    path = tmp_path / "filters.json"
    path.write_text(json.dumps({"acme": "-action:GetJobRunLogs", "*": 'type:"Job Run"'}))
    filters = load_export_filters(str(path))
    assert export_filter_for(filters, "acme").text == "-action:GetJobRunLogs"
    assert export_filter_for(filters, "globex").text == 'type:"Job Run"'
    assert export_filter_for({}, "acme").terms == ()
    yaml_path = tmp_path / "filters.yaml"
    yaml_path.write_text("acme: 'user:alice@acme.com'\n")
    assert export_filter_for(load_export_filters(str(yaml_path)), "acme").terms[0].field == "user"


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"acme": "foo:bar"}, "query for acme: at character 1: unknown qualifier"),
        ({"../etc": ""}, "invalid organization id"),
    ],
)
def test_export_filters_file_errors_name_the_organization(tmp_path, mapping, message):
    path = tmp_path / "filters.json"
    path.write_text(json.dumps(mapping))
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        load_export_filters(str(path))


def test_export_filters_come_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"acme": "curl"}))
    monkeypatch.setenv("AUDIT_EXPORT_FILTERS", str(path))
    assert load_export_filters()["acme"].text == "curl"
    monkeypatch.delenv("AUDIT_EXPORT_FILTERS")
    assert load_export_filters() == {}


# --- one filter model: convenience fields are query terms ------------------------------------


def test_convenience_fields_become_terms_with_the_same_meaning():
    query = parse("-region:aws-us-east-1").with_fields(
        search="CURL", users=["ALICE@acme.com", " "], actions=["createjobrun", "UploadFile"]
    )
    assert [(t.field, t.value) for t in query.terms] == [
        ("region", "aws-us-east-1"),
        ("text", "CURL"),
        ("user", "ALICE@acme.com"),
        ("action", "CreateJobRun"),
        ("action", "UploadFile"),
    ]
    assert lake_rows().filter(query.predicate())["event_id"].to_list() == ["e1"]
    spaced = parse("").with_fields(search="quoted text")  # the whole search text, spaces and all
    assert lake_rows().filter(spaced.predicate())["event_id"].to_list() == ["e3"]
    assert parse("x").with_fields() == parse("x")


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(actions=["Nope"]), "action: unknown action 'Nope'"),
        (dict(search="a\x00b"), "search: control character"),
        (dict(search="x" * 1025), "search: the query is 1025 characters long"),
        (dict(users=[f"u{i}@acme.com" for i in range(33)]), "33 terms"),
    ],
)
def test_convenience_fields_are_checked_like_the_query(fields, message):
    with pytest.raises(BadInput, match=message):
        parse("").with_fields(**fields)


def test_event_filter_has_no_filter_of_its_own():
    from dataclasses import fields

    assert [f.name for f in fields(EventFilter)] == ["organization_id", "start", "end", "query"]
    flt = EventFilter.from_fields(
        "acme", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC), users=["bob@acme.com"]
    )
    assert flt.query.terms == (Term("user", "bob@acme.com", False, 0),)
    assert flt.apply(lake_rows())["event_id"].to_list() == ["e2"]


def test_filters_and_query_modules_do_not_import_each_other():
    import ast
    from pathlib import Path

    source = Path(__file__).parents[1] / "include" / "audit" / "filters.py"
    imported = {node.module for node in ast.walk(ast.parse(source.read_text())) if isinstance(node, ast.ImportFrom)}
    assert "query" not in imported


# --- bounded cost: caps, deduplication, linear evaluation ------------------------------------


def test_query_length_and_term_caps_are_query_errors():
    with pytest.raises(QueryError, match="1025 characters long: at most 1024") as caught:
        parse("x" * 1025)
    assert caught.value.position == 1025
    assert len(parse(" ".join(["ab"] * 32)).terms) == 32
    with pytest.raises(QueryError, match="more than 32 terms") as caught:
        parse(" ".join(["ab"] * 33))
    assert caught.value.position == 3 * 32 + 1
    with pytest.raises(QueryError, match="control character"):
        parse("curl\x00")


@pytest.mark.parametrize(
    "text",
    ["created:0001-01-01", "created:9999-12-31", "created:<=9999-12-31T23:59:59Z", "created:0001-01-01..9999-12-31"],
)
def test_created_at_the_ends_of_time_is_no_overflow(text):
    assert kept(text) == ["e1", "e2", "e3", "e4"] or kept(text) == []


@pytest.mark.parametrize("text", ["created:0001-01-01T00:00:00+23:59", "created:>9999-12-31T23:59:59-23:59"])
def test_created_outside_utc_years_is_a_query_error(text):
    with pytest.raises(QueryError, match="outside the years 1-9999"):
        parse(text)


def test_apply_keeps_the_same_rows_as_the_predicate():
    for text in [
        "",
        "curl -carol",
        "user:alice@acme.com user:bob@acme.com -region:aws-eu-west-1",
        'resource:JOB -"job run" created:>=2026-11-01T12:00:00Z',
        "-ip:203.0.113.7 203",
    ]:
        query = parse(text)
        assert query.apply(lake_rows()).equals(lake_rows().filter(query.predicate())), text


def big_frame(n: int) -> pl.DataFrame:
    return pl.concat([lake_rows()] * (n // 4)).with_columns(event_id=pl.int_range(pl.len()).cast(pl.String))


def test_repeated_terms_cost_what_one_term_costs():
    """Issue 10: 400 copies of ``x`` took 42.7 s on 361 rows; identical terms are now evaluated once."""
    import time

    frame = big_frame(200_000)
    timings = {}
    for copies in (1, 32):
        query = parse(" ".join(["x"] * copies))
        began = time.perf_counter()
        query.apply(frame)
        timings[copies] = time.perf_counter() - began
    assert timings[32] < 5 * timings[1] + 0.2, timings


def test_thirty_two_distinct_terms_stay_linear():
    import time

    terms = " ".join(f"-zz{i}" for i in range(32))
    began = time.perf_counter()
    assert parse(terms).apply(big_frame(100_000)).height == 100_000
    assert time.perf_counter() - began < 5
