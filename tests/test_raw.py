"""Parsing raw JSON Lines: every line is either an event row or a quarantine record."""

import gzip
import json

from polars.testing import assert_frame_equal

from include.audit.raw import ParsedLines, RawFile, _parse_lines, discover, parse_files, parse_into
from include.audit.storage import Root

from .helpers import event, write_lines


def parse(data: bytes) -> ParsedLines:
    parsed = ParsedLines()
    parse_into(parsed, data, "f.jsonl")
    return parsed


def test_lf_crlf_and_blank_lines():
    data = (json.dumps(event(event_id="a")) + "\r\n\r\n  \n" + json.dumps(event(event_id="b")) + "\n\n").encode()
    parsed = parse(data)
    frame = parsed.frame()
    assert frame["event_id"].to_list() == ["a", "b"]
    assert frame["line_number"].to_list() == [1, 4]
    assert parsed.lines == 2 and parsed.rejected == []
    assert parsed.raw_lines(["f.jsonl", "f.jsonl"], [4, 1]) == [json.dumps(event(event_id="b")),
                                                               json.dumps(event(event_id="a"))]


def test_fast_and_line_by_line_parsing_agree():
    data = (json.dumps(event(event_id="a")) + "\r\n\n" + json.dumps(event(event_id="b", region=None)) + "\n").encode()
    fast = parse(data).frame()
    slow = _parse_lines(ParsedLines(), data, "f.jsonl")
    assert_frame_equal(fast, slow)
    assert fast["line_number"].to_list() == [1, 3]


def test_extra_fields_take_the_same_canonical_form_on_both_paths():
    data = (json.dumps(event(event_id="a", zeta={"y": 1, "x": "é"}, alpha=None)) + "\n"
            + json.dumps(event(event_id="b")) + "\n").encode()
    fast = parse(data).frame()
    slow = _parse_lines(ParsedLines(), data, "f.jsonl")
    assert_frame_equal(fast, slow)
    assert fast["attributes"].to_list() == ['{"zeta":{"x":"é","y":1}}', None]


def test_malformed_lines_are_rejected_with_their_raw_text_and_line_number():
    data = b'{"event_id": "a",\n[1, 2]\n"text"\n{"bad": "\xff"}\nnull\n'
    parsed = parse(data)
    assert [r["reason"] for r in parsed.rejected] == ["malformed_json"] * 5
    assert [r["line_number"] for r in parsed.rejected] == [1, 2, 3, 4, 5]
    assert parsed.rejected[0]["raw"] == '{"event_id": "a",'
    assert "not UTF-8" in parsed.rejected[3]["detail"]
    assert "\\xff" in parsed.rejected[3]["raw"]
    assert "not a JSON object" in parsed.rejected[1]["detail"]


def test_extra_fields_are_kept_as_canonical_json_attributes():
    parsed = parse(json.dumps(event(zeta=1, alpha={"b": [1, 2]}, note="ü")).encode())
    attributes = parsed.frame()["attributes"][0]
    assert json.loads(attributes) == {"alpha": {"b": [1, 2]}, "note": "ü", "zeta": 1}
    assert attributes.startswith('{"alpha"')  # sorted: re-deliveries compare equal
    assert parse(json.dumps(event()).encode()).frame()["attributes"].to_list() == [None]


def test_non_string_values_become_their_json_text():
    frame = parse(json.dumps(event(event_id=123, region=None, ip_address=[1])).encode()).frame()
    assert frame["event_id"].to_list() == ["123"]
    assert frame["region"].to_list() == [None]
    assert frame["ip_address"].to_list() == ["[1]"]


def test_discover_and_read_plain_gzip_and_corrupt_files(tmp_path):
    write_lines(tmp_path / "2026/11/25/10/a.jsonl", [event(event_id="a")])
    (tmp_path / "2026/11/25/10/b.jsonl.gz").write_bytes(gzip.compress((json.dumps(event(event_id="b")) + "\n").encode()))
    write_lines(tmp_path / "c.json", [event(event_id="c")])
    (tmp_path / "d.jsonl.gz").write_bytes(b"\x1f\x8b\x08 this is not gzip")
    (tmp_path / "ignored.txt").write_text("x")
    (tmp_path / ".hidden.jsonl").write_text("x")
    root = Root.open(str(tmp_path))
    files = discover(root)
    assert [f.path for f in files] == ["2026/11/25/10/a.jsonl", "2026/11/25/10/b.jsonl.gz", "c.json", "d.jsonl.gz"]
    parsed = parse_files(root, files)
    frame = parsed.frame()
    assert frame["event_id"].to_list() == ["a", "b", "c"]
    assert frame["source_file"].to_list() == ["2026/11/25/10/a.jsonl", "2026/11/25/10/b.jsonl.gz", "c.json"]
    assert [(r["reason"], r["source_file"], r["line_number"]) for r in parsed.rejected] == [
        ("unreadable_file", "d.jsonl.gz", None)]


def test_signature_changes_when_a_file_changes(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [event()])
    root = Root.open(str(tmp_path))
    (before,) = discover(root)
    write_lines(path, [event(), event(event_id="evt-2")])
    (after,) = discover(root)
    assert isinstance(before, RawFile) and before.signature != after.signature
