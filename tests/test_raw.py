"""The raw parser: discovery, line discipline, both parse paths, chunks, limits and file-level records."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from include.audit.raw import (
    PARSED_SCHEMA,
    Chunk,
    Discovery,
    Limits,
    RawFile,
    discover,
    modified,
    parse_line,
    read_chunks,
)
from include.audit.storage import Root

from .helpers import event, write_lines

DEFAULT_LIMITS = Limits()


def chunks_of(
    tmp_path: Path,
    data: bytes,
    name: str = "f.jsonl",
    chunk_bytes: int = 1 << 20,
    after_line: int = 0,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Chunk]:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    root = Root.open(str(tmp_path))
    (file,) = [f for f in discover(root).files if f.path == name]
    return list(read_chunks(root, file, chunk_bytes=chunk_bytes, after_line=after_line, limits=limits))


def rows_of(chunks: list[Chunk]) -> pl.DataFrame:
    return pl.concat([c.rows for c in chunks])


def rejected_of(chunks: list[Chunk]) -> list[tuple]:
    return [(r["reason"], r["line_number"]) for c in chunks for r in c.rejected.iter_rows(named=True)]


def reference(data: bytes, source: str = "f.jsonl", limits: Limits = DEFAULT_LIMITS) -> tuple[pl.DataFrame, list, int]:
    """What the careful parser says about every line, one at a time: the oracle for both paths."""
    rows, rejected, blank = [], [], 0
    body = data.removeprefix(b"\xef\xbb\xbf")
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, 1):
        line = line.removesuffix(b"\r") if number < len(lines) or body.endswith(b"\n") else line
        if len(line) > limits.line_bytes:
            rejected.append(("line_too_large", number))
            continue
        parsed = parse_line(line, limits.depth)
        if parsed is None:
            blank += 1
        elif len(parsed) == 2:
            rejected.append((parsed[0], number))
        else:
            rows.append((*parsed, source, number))
    return pl.DataFrame(rows, schema=PARSED_SCHEMA, orient="row"), rejected, blank


def line(**overrides) -> str:
    return json.dumps(event(**overrides))


# --- line discipline and the two paths ----------------------------------------------------------


def test_lf_crlf_and_blank_lines(tmp_path):
    data = (line(event_id="a") + "\r\n\r\n  \n" + line(event_id="b") + "\n\n").encode()
    (chunk,) = chunks_of(tmp_path, data)
    assert chunk.rows["event_id"].to_list() == ["a", "b"]
    assert chunk.rows["line_number"].to_list() == [1, 4]
    assert chunk.rejected.is_empty() and chunk.blank_lines == 3
    assert (chunk.first_line, chunk.last_line, chunk.done) == (1, 5, True)
    assert chunk.raw_lines([4, 1]) == [line(event_id="b"), line(event_id="a")]


def test_bare_cr_between_objects_is_one_malformed_line(tmp_path):
    data = (line(event_id="a") + "\r" + line(event_id="b") + "\n" + line(event_id="c", x=1) + "\n").encode()
    chunks = chunks_of(tmp_path, data)
    assert rows_of(chunks)["event_id"].to_list() == ["c"]
    assert rows_of(chunks)["line_number"].to_list() == [2]
    assert rejected_of(chunks) == [("malformed_json", 1)]


def test_bare_cr_with_a_blank_line_keeps_extra_fields_and_line_numbers(tmp_path):
    data = (
        line(event_id="a")
        + "\r"
        + line(event_id="b")
        + "\n\n"
        + line(event_id="c", zeta={"k": 1})
        + "\n"
        + line(event_id="d")
        + "\n"
    ).encode()
    frame = rows_of(chunks_of(tmp_path, data))
    assert frame.select("event_id", "line_number", "attributes").rows() == [
        ("c", 3, '{"zeta":{"k":1}}'),
        ("d", 4, None),
    ]


def test_u2028_and_a_cr_inside_a_string_are_data(tmp_path):
    data = (line(event_id="a\u2028b", resource="x\ry") + "\n" + line(event_id="c") + "\n").encode()
    frame = rows_of(chunks_of(tmp_path, data))
    assert frame.select("event_id", "resource", "line_number").rows()[0] == ("a\u2028b", "x\ry", 1)
    assert frame["line_number"].to_list() == [1, 2]


TRICKY_EXTRAS = [  # colons and quotes in keys and values, escapes, spacing, repeated keys
    line(event_id="h", note=":x", **{":": 1, "a:b": {"c": ":"}}),
    line(event_id="i", quote='say "hi"', region="eu\\west").replace('"quote"', '"quo\\u0074e"'),
    line(event_id="j", meta={"k": [1, {"k": 2}]}).replace('"meta": ', '"meta" : '),
    line(event_id="k", meta={"k": ":"}).replace('"k": ":"', '"k": ":", "k": 1'),
    line(event_id="m", a="\\", b=None).replace('"a": ', '"a\\u0022": '),
    line(event_id="n", resource="r\u00e9:1", extra=[":", '\\"']),
    line(event_id="o", region=None, extra="x"),
]


def test_extra_fields_read_beside_arrow_agree_with_the_reference(tmp_path, monkeypatch):
    from include.audit import raw

    seen = []
    real = raw._extra_fields
    monkeypatch.setattr(raw, "_extra_fields", lambda *a: seen.append(a[0]) or real(*a))
    data = ("\n".join([line(event_id="g"), *TRICKY_EXTRAS]) + "\n").encode()
    (chunk,) = chunks_of(tmp_path, data)
    rows, rejected, _ = reference(data)
    assert_frame_equal(chunk.rows, rows)
    assert rejected_of([chunk]) == rejected == [("malformed_json", 5)]
    assert len(seen) == len(TRICKY_EXTRAS)  # each went the vectorized way first, then was checked alone


@pytest.mark.parametrize("chunk_bytes", [1, 300, 1 << 20])
def test_both_paths_agree_with_the_line_by_line_reference(tmp_path, chunk_bytes):
    lines = [
        line(event_id="a"),
        line(event_id="b", zeta={"y": 1, "x": "é"}, alpha=None),
        "",
        "null",
        line(event_id="c", region=None),
        '{"event_id": "a",',
        line(event_id=7),
        "  " + line(event_id="d"),
        line(event_id="e") + "  ",
        line(event_id="f", region=3),
        "[1, 2]",
        line(event_id="g"),
        *TRICKY_EXTRAS,
        line(event_id="l", extra=1).replace('"extra": 1', '"extra": 1, "region": "x"'),
    ]
    data = ("\n".join(lines) + "\n").encode()
    chunks = chunks_of(tmp_path, data, chunk_bytes=chunk_bytes)
    rows, rejected, blank = reference(data)
    assert_frame_equal(rows_of(chunks), rows)
    assert rejected_of(chunks) == rejected
    assert sum(c.blank_lines for c in chunks) == blank


def test_extra_fields_are_kept_as_canonical_json_attributes(tmp_path):
    frame = rows_of(chunks_of(tmp_path, (line(zeta=1, alpha={"b": [1, 2]}, note="ü", gone=None) + "\n").encode()))
    attributes = frame["attributes"][0]
    assert json.loads(attributes) == {"alpha": {"b": [1, 2]}, "note": "ü", "zeta": 1}
    assert attributes.startswith('{"alpha"')  # sorted: re-deliveries compare equal


def test_malformed_lines_are_rejected_with_their_raw_text_and_line_number(tmp_path):
    data = b'{"event_id": "a",\n[1, 2]\n"text"\n{"bad": "\xff"}\nnull\n5\n{"a": NaN}\n{"a": "\\ud800"}\n'
    (chunk,) = chunks_of(tmp_path, data)
    records = chunk.rejected.rows(named=True)
    assert [r["reason"] for r in records] == ["malformed_json"] * 8
    assert [r["line_number"] for r in records] == list(range(1, 9))
    assert records[0]["raw"] == '{"event_id": "a",'
    assert "not UTF-8" in records[3]["detail"] and "\\xff" in records[3]["raw"]
    assert [r["detail"] for r in records[1:3]] == ["a JSON array, not an object", "a JSON string, not an object"]
    assert records[4]["detail"] == "a JSON null, not an object"


def test_a_bare_null_is_malformed_whatever_else_the_file_holds(tmp_path):
    for name, data in [("valid.jsonl", line() + "\nnull\n"), ("null-first.jsonl", "null\n" + line() + "\n")]:
        chunks = chunks_of(tmp_path, data.encode(), name=name)
        assert ("malformed_json", data.split("\n").index("null") + 1) in rejected_of(chunks)
        assert rows_of(chunks).height == 1


def test_duplicate_keys_are_malformed_and_name_the_key(tmp_path):
    data = (
        '{"event_id": "a", "organization_id": "acme", "organization_id": "evil"}\n'
        + line(event_id="b", meta={"k": 1}).replace('"k": 1', '"k": 1, "k": 0')
        + "\n"
        + '{"event_id": "c", "event\\u005fid": "d"}\n'
    ).encode()
    (chunk,) = chunks_of(tmp_path, data)
    assert chunk.rows.is_empty()
    assert chunk.rejected["reason"].to_list() == ["malformed_json"] * 3
    assert chunk.rejected["detail"].to_list() == [
        "duplicate key 'organization_id'",
        "duplicate key 'k'",
        "duplicate key 'event_id'",
    ]


@pytest.mark.parametrize("value, kind", [(123, "number"), (True, "boolean"), ({"a": 1}, "object"), ([1], "array")])
@pytest.mark.parametrize("field", ["event_id", "organization_id", "user_email"])
def test_required_fields_must_be_strings(tmp_path, field, value, kind):
    (chunk,) = chunks_of(tmp_path, (line(**{field: value}) + "\n").encode())
    assert chunk.rows.is_empty()
    assert chunk.rejected.select("reason", "detail").row(0) == (
        "invalid_type",
        f"{field} is a JSON {kind}, not a string",
    )


def test_optional_fields_of_other_types_keep_their_json_text(tmp_path):
    frame = rows_of(chunks_of(tmp_path, (line(region=None, resource={"b": 1, "a": [2]}) + "\n").encode()))
    assert frame.select("region", "resource").row(0) == (None, '{"a":[2],"b":1}')


# --- limits ---------------------------------------------------------------------------------------


def test_depth_limit_is_exact_and_ignores_brackets_in_strings(tmp_path):
    limits = Limits(depth=5)
    within = line(x=[[[[1]]]], s="[[[[[[{{{{{")  # 5 levels with the event object
    deeper = line(x=[[[[[1]]]]])
    (chunk,) = chunks_of(tmp_path, f"{within}\n{deeper}\n".encode(), limits=limits)
    assert chunk.rows["line_number"].to_list() == [1]
    assert chunk.rejected.select("reason", "line_number").rows() == [("too_deeply_nested", 2)]
    assert "6 levels" in chunk.rejected["detail"][0]


@pytest.mark.parametrize("levels", [800, 5000])
def test_deep_nesting_is_quarantined_not_parsed(tmp_path, levels):
    deep = json.dumps(event()).removesuffix("}") + ', "x": ' + "[" * levels + "]" * levels + "}"
    chunks = chunks_of(tmp_path, f"{line(event_id='ok')}\n{deep}\n".encode())
    assert rejected_of(chunks) == [("too_deeply_nested", 2)]
    assert rows_of(chunks)["event_id"].to_list() == ["ok"]


def test_a_line_over_the_limit_is_kept_truncated_with_its_size(tmp_path):
    big = line(resource="r" * 5000)
    data = f"{line(event_id='a')}\n{big}\r\n{line(event_id='b')}\n".encode()
    for chunk_bytes in (64, 1 << 20):  # read past in pieces, or found inside a block
        chunks = chunks_of(tmp_path, data, chunk_bytes=chunk_bytes, limits=Limits(line_bytes=1000))
        records = pl.concat([c.rejected for c in chunks]).rows(named=True)
        assert [(r["reason"], r["line_number"]) for r in records] == [("line_too_large", 2)]
        assert f"line is {len(big)} bytes" in records[0]["detail"]
        assert records[0]["raw"] == big[:4096]
        assert rows_of(chunks)["line_number"].to_list() == [1, 3]


def test_file_limit_counts_decompressed_bytes_and_keeps_the_lines_before_it(tmp_path):
    lines = [line(event_id=str(i)) for i in range(100)]
    data = ("\n".join(lines) + "\n").encode()
    limit = len(data) // 2
    chunks = chunks_of(tmp_path, data, name="f.jsonl.gz", chunk_bytes=1000, limits=Limits(file_bytes=limit))
    kept = rows_of(chunks)
    assert kept.height == len(data[:limit].split(b"\n")) - 1  # every whole line within the limit
    assert chunks[-1].done and [c.done for c in chunks].count(True) == 1
    (record,) = chunks[-1].rejected.rows(named=True)
    assert (record["reason"], record["line_number"], record["raw"]) == ("file_too_large", None, None)
    assert f"lines after {kept.height} are not ingested" in record["detail"]
    exact = chunks_of(tmp_path, data, name="g.jsonl", limits=Limits(file_bytes=len(data)))
    assert rows_of(exact).height == 100 and rejected_of(exact) == []


def test_limits_from_the_environment():
    env = {
        "AUDIT_MAX_LINE_BYTES": "2048",
        "AUDIT_MAX_DEPTH": "8",
        "AUDIT_MAX_FILE_BYTES": "1000000",
        "AUDIT_MAX_FIELD_BYTES_RESOURCE": "100",
    }
    limits = Limits.from_env(env)
    assert (limits.line_bytes, limits.depth, limits.file_bytes) == (2048, 8, 1000000)
    assert limits.field_bytes["resource"] == 100 and limits.field_bytes["user_agent"] == 8192
    assert Limits.from_env({}) == Limits()
    assert (Limits().line_bytes, Limits().depth, Limits().file_bytes) == (1 << 20, 64, 2 << 30)
    for bad in ("0", "-5", "1e6", "lots"):
        with pytest.raises(ValueError, match="AUDIT_MAX_DEPTH must be a positive whole number"):
            Limits.from_env({"AUDIT_MAX_DEPTH": bad})


# --- chunks ---------------------------------------------------------------------------------------


def test_chunks_cover_every_line_once_and_resume_after_a_line(tmp_path):
    lines = [line(event_id=str(i)) if i % 7 else "not json" for i in range(1, 201)]
    data = ("\r\n".join(lines)).encode()  # no newline at the end
    chunks = chunks_of(tmp_path, data, chunk_bytes=2000)
    assert len(chunks) > 5 and chunks[0].first_line == 1 and chunks[-1].last_line == 200
    assert all(b.first_line == a.last_line + 1 for a, b in itertools.pairwise(chunks))
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert sum(c.nbytes for c in chunks) == len(data)
    for c in chunks:
        numbers = c.rows["line_number"].to_list() + c.rejected["line_number"].to_list()
        assert sorted(numbers) == list(range(c.first_line, c.last_line + 1))
        assert c.raw_lines(c.rows["line_number"].to_list()) == [lines[n - 1] for n in c.rows["line_number"]]
    resumed = chunks_of(tmp_path, data, chunk_bytes=2000, after_line=120)
    assert resumed[0].first_line == 121 and resumed[-1].last_line == 200 and resumed[-1].done
    assert rows_of(resumed)["line_number"].to_list() == [n for n in range(121, 201) if n % 7]
    assert rejected_of(resumed) == [("malformed_json", n) for n in range(121, 201) if n % 7 == 0]
    (past_the_end,) = chunks_of(tmp_path, data, after_line=200)
    assert past_the_end.done and past_the_end.rows.is_empty() and past_the_end.first_line == 201


def test_empty_file_is_one_empty_last_chunk(tmp_path):
    (chunk,) = chunks_of(tmp_path, b"")
    assert chunk.done and chunk.rows.is_empty() and chunk.rejected.is_empty() and chunk.last_line == 0


def test_a_byte_order_mark_at_the_start_is_ignored(tmp_path):
    (chunk,) = chunks_of(tmp_path, b"\xef\xbb\xbf" + (line() + "\n").encode())
    assert chunk.rows.height == 1 and chunk.raw_lines([1]) == [line()]


def test_corrupt_gzip_is_one_unreadable_record_after_the_lines_before_it(tmp_path):
    good = gzip.compress(("\n".join(line(event_id=str(i)) for i in range(3000)) + "\n").encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(good[: len(good) * 2 // 3])
    (tmp_path / "junk.jsonl.gz").write_bytes(b"\x1f\x8b\x08 this is not gzip")
    root = Root.open(str(tmp_path))
    files = {f.path: f for f in discover(root).files}
    cut = list(read_chunks(root, files["cut.jsonl.gz"], chunk_bytes=50_000))
    assert len(cut) > 2 and rows_of(cut).height > 0 and cut[-1].done and cut[-1].rows.is_empty()
    (record,) = cut[-1].rejected.rows(named=True)
    assert (record["reason"], record["source_file"], record["line_number"]) == ("unreadable_file", "cut.jsonl.gz", None)
    assert f"after line {cut[-2].last_line}" in record["detail"]
    (junk,) = read_chunks(root, files["junk.jsonl.gz"], chunk_bytes=50_000)
    assert junk.rejected.select("reason", "source_file").rows() == [("unreadable_file", "junk.jsonl.gz")]
    middle = len(good) // 2
    (tmp_path / "bad.jsonl.gz").write_bytes(
        good[:middle] + bytes(b ^ 0xFF for b in good[middle : middle + 64]) + good[middle + 64 :]
    )
    (tmp_path / "plain.jsonl.gz").write_bytes(b"not gzip at all\n")
    for name in ("bad.jsonl.gz", "plain.jsonl.gz"):
        *_, last = read_chunks(
            root, discover(root).files[[f.path for f in discover(root).files].index(name)], chunk_bytes=50_000
        )
        (record,) = last.rejected.rows(named=True)
        assert record["reason"] == "unreadable_file" and record["detail"].startswith("not a readable gzip file"), record


@pytest.mark.s3
def test_storage_errors_propagate_instead_of_quarantining(s3_env, s3_prefix):
    root = Root.open(s3_prefix)
    root.write_bytes(root.join("a.jsonl"), (line() + "\n").encode())
    (file,) = discover(root).files
    denied = Root.open(s3_prefix, key=s3_env["AWS_ACCESS_KEY_ID"], secret="wrong-secret")
    with pytest.raises(Exception) as raised:
        list(read_chunks(denied, file, chunk_bytes=1000))
    assert not isinstance(raised.value, AssertionError)
    (chunk,) = read_chunks(root, file, chunk_bytes=1000)
    assert chunk.rows.height == 1 and file.modified is not None and file.modified.utcoffset().total_seconds() == 0


# --- discovery ------------------------------------------------------------------------------------


def test_discover_suffixes_hidden_paths_and_symlinks(tmp_path):
    for name in [
        "2026/11/25/10/a.jsonl",
        "b.json",
        "c.ndjson",
        "d.JSONL",
        "e.json.gz",
        "f.ndjson.gz",
        "g.jsonl.gz",
        "h.Json.GZ",
        "skip.txt",
        "skip.jsonl.bak",
        "skip.gz",
        ".hidden.jsonl",
        "_marker.jsonl",
        ".tmp/x.jsonl",
        ".tmp/y.jsonl",
        "_staging/deeper/z.jsonl",
        "ok/.partial.jsonl",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "missing.jsonl")
    (tmp_path / "passwd.jsonl").symlink_to("/etc/passwd")
    (tmp_path / "linked-dir").symlink_to(tmp_path / "2026")
    found = discover(Root.open(str(tmp_path)))
    assert isinstance(found, Discovery)
    assert [f.path for f in found.files] == [
        "2026/11/25/10/a.jsonl",
        "b.json",
        "c.ndjson",
        "d.JSONL",
        "e.json.gz",
        "f.ndjson.gz",
        "g.jsonl.gz",
        "h.Json.GZ",
    ]
    assert found.skipped == {"suffix": 3, "hidden": 6, "symlink": 3}


def test_discover_counts_all_three_reasons_even_when_nothing_is_skipped(tmp_path):
    write_lines(tmp_path / "a.jsonl", [event()])
    assert discover(Root.open(str(tmp_path))).skipped == {"suffix": 0, "hidden": 0, "symlink": 0}


def test_a_file_name_that_is_not_utf8_is_escaped_and_still_read(tmp_path):
    raw_name = os.fsencode(str(tmp_path)) + b"/caf\xe9-\xff.jsonl"
    with open(raw_name, "wb") as f:
        f.write((line() + "\n").encode())
    root = Root.open(str(tmp_path))
    (file,) = discover(root).files
    assert file.path == "caf\\xe9-\\xff.jsonl"
    file.path.encode("utf-8")  # printable, storable
    (chunk,) = read_chunks(root, file, chunk_bytes=1000)
    assert chunk.rows["source_file"].to_list() == ["caf\\xe9-\\xff.jsonl"]


def test_signature_and_arrival_time(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [event()])
    os.utime(path, (1_764_064_800, 1_764_064_800))
    root = Root.open(str(tmp_path))
    (before,) = discover(root).files
    assert before.modified is not None and before.modified.isoformat() == "2025-11-25T10:00:00+00:00"
    write_lines(path, [event(), event(event_id="evt-2")])
    (after,) = discover(root).files
    assert isinstance(before, RawFile) and before.signature != after.signature


def test_an_unusable_modification_time_is_unknown_not_fatal():
    """A store's odd date (a tzinfo out of range, a number out of range) leaves arrival unknown."""
    from datetime import UTC, datetime, timedelta, tzinfo

    class Broken(tzinfo):
        def utcoffset(self, dt):
            return timedelta(hours=30)

    assert modified({"LastModified": datetime(2026, 11, 26, tzinfo=Broken())}) is None
    assert modified({"mtime": 1e300}) is None
    assert modified({"mtime": 0.0}) == datetime(1970, 1, 1, tzinfo=UTC)
