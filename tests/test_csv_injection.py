"""CSV formula injection (issue 10, "CSV"): OWASP / ASVS 5.0 neutralisation, every other cell byte for byte."""

import csv
import io

import polars as pl
import pytest

from include.audit.exports import csv_body, neutralize_formulas

LEADING = [" ", "\t", "\u00a0", "\u3000", "\u200b", "\ufeff", "  \u00a0\t"]
TRIGGERS = ["=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20"]


def neutralised(value: str) -> str:
    return neutralize_formulas(pl.DataFrame({"cell": [value]}))["cell"][0]


@pytest.mark.parametrize("trigger", TRIGGERS)
@pytest.mark.parametrize("lead", [""] + LEADING)
def test_a_trigger_after_any_leading_whitespace_is_neutralised(lead, trigger):
    value = f'{lead}{trigger}HYPERLINK("http://evil")'
    assert neutralised(value) == "'" + value


@pytest.mark.parametrize("value", ["\x00=1", "\x00abc", "\nabc", "\r\nabc", "\rabc", "\tabc"])
def test_cells_starting_with_nul_or_a_line_break_are_neutralised(value):
    assert neutralised(value) == "'" + value


@pytest.mark.parametrize(
    "value",
    [
        "a=1",
        "alice@acme.com",
        "job-run/1",
        " plain",
        "\u00a0text",
        "2026-11-01",
        "203.0.113.7",
        "2001:db8::1",
        "Mozilla/5.0 (X11; +http)",
        "",
        "'=already",
        "x\n=1",
        "\u3000\u3000ok",
        "\ufeffhello",
    ],
)
def test_every_other_cell_is_kept_byte_for_byte(value):
    assert neutralised(value) == value
    body = csv_body(pl.DataFrame({"a": [value], "b": ["x"]}))
    (row,) = csv.reader(io.StringIO(body.decode(), newline=""))
    assert row == [value, "x"]


def test_nulls_and_non_text_columns_are_untouched():
    frame = pl.DataFrame({"a": [None, "=1"], "n": [-1, 2]})
    assert neutralize_formulas(frame).to_dict(as_series=False) == {"a": [None, "'=1"], "n": [-1, 2]}


def test_neutralised_cells_survive_csv_quoting():
    body = csv_body(pl.DataFrame({"a": ["\u3000=cmd|' /C calc'!A0", "-2+3"], "b": ["\r\n@SUM(1)", "ok"]}))
    rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert rows == [["'\u3000=cmd|' /C calc'!A0", "'\r\n@SUM(1)"], ["'-2+3", "ok"]]
