"""Hostile raw input (issue 10): no line, file or file name stops ingestion, crashes the process or
exhausts memory. The reproductions run the real command line on temporary roots; a property test
mutates valid lines at random and checks that every line is accounted for, exactly as the
line-by-line reference parser says."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from include.audit.raw import Limits, discover, read_chunks
from include.audit.storage import Root

from .helpers import event
from .test_raw import reference

NOW = "2026-11-26T12:00:00Z"
REPO = Path(__file__).resolve().parents[1]


def ingest_cli(raw: Path, lake: Path, **env: str) -> tuple[subprocess.CompletedProcess, int]:
    """``python -m include.audit ingest`` in a process of its own: its result and peak RSS (MiB)."""
    report = raw.parent / "time.txt"
    done = subprocess.run(
        [
            "/usr/bin/time",
            "-f",
            "%M",
            "-o",
            str(report),
            sys.executable,
            "-m",
            "include.audit",
            "ingest",
            "--raw-root",
            str(raw),
            "--lake-root",
            str(lake),
            "--now",
            NOW,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    return done, int(report.read_text().split()[-1]) // 1024


def valid(i: int, **overrides) -> str:
    return json.dumps(event(event_id=f"ok-{i}", **overrides))


def nested(levels: int) -> str:
    return (
        json.dumps(event(event_id=f"deep-{levels}")).removesuffix("}") + ', "x": ' + "[" * levels + "]" * levels + "}"
    )


def test_hostile_files_are_quarantined_and_every_valid_event_lands(tmp_path):
    raw, lake = tmp_path / "raw", tmp_path / "lake"
    raw.mkdir()
    files = {
        "deep-800.jsonl": [valid(1), nested(800)],  # segfaulted in the Arrow -> polars conversion
        "deep-5000.jsonl": [nested(5000), valid(2)],  # RecursionError
        "bare-cr.jsonl": [valid(3) + "\r" + valid(4), valid(5)],
        "bare-cr-blank.jsonl": [valid(6) + "\r" + valid(7), "", valid(8, zeta={"k": 1})],
        "null-first.jsonl": ["null", valid(9)],  # a bare null crashed pyarrow's reader
        "duplicate-keys.jsonl": ['{"event_id": "dup", "organization_id": "acme", "organization_id": "evil"}'],
        "types.jsonl": [
            json.dumps(event(event_id=1)),
            json.dumps(event(organization_id=True)),
            json.dumps(event(user_email={"a": 1})),
            json.dumps(event(event_id=["x"])),
        ],
        "blank-ids.jsonl": [json.dumps(event(event_id=" ")), json.dumps(event(organization_id="\u3000"))],
        "leap.jsonl": [json.dumps(event(event_id="leap", event_time="2026-11-25T23:59:60.5Z"))],
        "big-field.jsonl": [json.dumps(event(event_id="big", resource="r" * 9000))],
    }
    for name, lines in files.items():
        (raw / name).write_text("\n".join(lines) + "\n")
    (raw / "corrupt.jsonl.gz").write_bytes(b"\x1f\x8b\x08 not gzip")
    os.symlink(raw / "missing.jsonl", raw / "dangling.jsonl")
    os.symlink("/etc/passwd", raw / "passwd.jsonl")
    with open(os.fsencode(str(raw)) + b"/caf\xe9.jsonl", "w") as f:
        f.write(valid(10) + "\n")
    for name in ("x.JSONL", "x.ndjson", "x.json.gz"):  # accepted suffixes now
        data = (valid(11 + len(name)) + "\n").encode()
        (raw / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    (raw / ".hidden.jsonl").write_text(valid(99) + "\n")
    (raw / ".staging").mkdir()
    (raw / ".staging" / "a.jsonl").write_text(valid(98) + "\n")

    done, _ = ingest_cli(raw, lake)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["quarantined"] == {
        "too_deeply_nested": 2,
        "malformed_json": 4,
        "invalid_type": 4,
        "missing_field": 2,
        "field_too_large": 1,
        "invalid_timestamp": 1,
        "unreadable_file": 1,
    }
    # ok-1, 2, 5, 8, 9, 10 and the three suffix files; nothing from hidden paths or symlinks
    assert summary["ingested"] == 9
    assert summary["lines"] == summary["ingested"] + summary["duplicates"] + summary["quarantined_total"] - 1
    assert "root:x:0" not in done.stdout + done.stderr


@pytest.mark.slow
def test_gzip_bomb_and_huge_lines_stay_in_bounded_memory(tmp_path):
    raw, lake = tmp_path / "raw", tmp_path / "lake"
    raw.mkdir()
    member = gzip.compress(b"A" * (1 << 20))
    (raw / "bomb.jsonl.gz").write_bytes(member * 1024)  # 1 MB that inflates to 1 GiB, without a line break
    line = (valid(1, resource="r" * (200 << 20)) + "\n").encode()
    (raw / "huge-resource.jsonl").write_bytes(line + (valid(2) + "\n").encode())
    (raw / "huge-line.jsonl").write_bytes(b"x" * (200 << 20) + b"\n" + (valid(3) + "\n").encode())
    done, peak = ingest_cli(raw, lake, AUDIT_MAX_FILE_BYTES=str(256 << 20))  # above the 200 MB files
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["quarantined"] == {"line_too_large": 2, "file_too_large": 1}
    assert summary["ingested"] == 2
    assert peak < 600, f"peak RSS {peak} MiB"  # the command itself (polars, Great Expectations) is ~400 MiB
    sizes = pl.concat([pl.read_parquet(p) for p in lake.rglob("quarantine/**/*.parquet")])
    assert sizes["raw"].str.len_bytes().fill_null(0).max() <= 4096


def test_a_block_of_distinct_extra_keys_stays_small(tmp_path):
    """Inferring a column per extra key let one 16 MB block of distinct keys take over 4.6 GB."""
    lines = [json.dumps({**event(event_id=f"e{i}"), **{f"k{i}_{j}": j for j in range(50)}}) for i in range(20_000)]
    body = ("\n".join(lines) + "\n").encode()
    (tmp_path / "wide.jsonl").write_bytes(body)
    script = (
        "import sys; from include.audit.raw import discover, read_chunks; "
        "from include.audit.storage import Root; root = Root.open(sys.argv[1]); (f,) = discover(root).files; "
        "print(sum(c.rows.height for c in read_chunks(root, f, chunk_bytes=16 << 20)))"
    )
    report = tmp_path / "time.txt"  # GNU time: a child's own peak, not the peak it inherits from pytest
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(report), sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows, peak_mib = int(done.stdout), int(report.read_text().split()[-1]) // 1024
    assert rows == 20_000 and peak_mib < 600


# --- property: random mutations of valid lines --------------------------------------------------


def _mutate(rng: random.Random, text: str) -> bytes:
    data = text.encode()
    kind = rng.randrange(12)
    if kind == 0:
        return data[: rng.randrange(len(data))]  # truncated
    if kind == 1:
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        return bytes(flipped)
    if kind == 2:
        levels = rng.choice([3, 60, 64, 65, 200, 1500])
        return data[:-1] + b', "n": ' + b"[" * levels + b"]" * levels + b"}"
    if kind == 3:
        return data[:-1] + b', "big": "' + b"x" * rng.choice([100, 3000, 9000]) + b'"}'
    if kind == 4:
        return data.replace(b", ", rng.choice([b",\r ", b",\xe2\x80\xa8", b",\x0c", b", \t"]), 1)
    if kind == 5:
        return rng.choice([b"null", b"5", b'"s"', b"[]", b"{}", b" ", b"\r", b"\xef\xbb\xbf" + data, b"\x00"])
    if kind == 6:
        return data + b"\r" + data  # two objects joined by a bare CR
    if kind == 7:
        return data.replace(b'"event_id": "', b'"event_id": 1, "x": "', 1)
    if kind == 8:
        return data[:-1] + b', "event_id": "again"}'
    if kind == 9:  # extra fields that a key count could miss: escapes, colons, nulls, nested repeats
        return (
            data[:-1]
            + rng.choice(
                [
                    b', "x": "a\\u003ab"',
                    b', "k:1": null',
                    b', "e": {"a": 1, "a": 2}',
                    b', "z": [1, {"q": "\\\\"}]',
                    b', "n": null',
                    b', "t": {"u": [{}]}',
                ]
            )
            + b"}"
        )
    if kind == 10:  # escaped colons and nulls among the event fields themselves
        return data.replace(
            b'"resource": "r', rng.choice([b'"resource": "\\u003a', b'"region": null, "resource": "r']), 1
        )
    return data


@pytest.mark.parametrize("seed", range(12))
def test_random_mutations_never_raise_and_account_for_every_line(tmp_path, seed):
    rng = random.Random(seed)
    endings = [b"\n", b"\r\n", b"\n", b"\n\r\n", b"\r\r\n"]
    body = b"".join(
        _mutate(rng, json.dumps(event(event_id=f"e{i}", resource=f"r{i}"))) + rng.choice(endings) for i in range(300)
    )
    if rng.random() < 0.5:
        body = body.rstrip(b"\n")  # no line break after the last line
    limits = Limits(line_bytes=rng.choice([2000, 8000, 1 << 20]), depth=64)
    name = rng.choice(["m.jsonl", "m.jsonl.gz"])
    (tmp_path / name).write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    root = Root.open(str(tmp_path))
    (file,) = discover(root).files
    chunk_bytes = rng.choice([1, 500, 4096, 1 << 20])
    chunks = list(read_chunks(root, file, chunk_bytes=chunk_bytes, limits=limits))

    lines = body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
    rows = pl.concat([c.rows for c in chunks])
    rejected = pl.concat([c.rejected for c in chunks])
    assert rows.height + rejected.height + sum(c.blank_lines for c in chunks) == lines
    assert chunks[-1].done and chunks[-1].last_line == lines and chunks[0].first_line == 1
    assert all(b.first_line == a.last_line + 1 for a, b in itertools.pairwise(chunks))
    numbers = rows["line_number"].to_list() + rejected["line_number"].to_list()
    assert len(set(numbers)) == len(numbers)
    expected_rows, expected_rejected, _ = reference(body, name, limits)
    assert_frame_equal(rows, expected_rows)
    assert list(zip(rejected["reason"], rejected["line_number"], strict=True)) == expected_rejected

    after = rng.randrange(lines + 1)  # resuming a file part-way returns exactly the lines after that one
    resumed = list(read_chunks(root, file, chunk_bytes=chunk_bytes, after_line=after, limits=limits))
    assert resumed[0].first_line == after + 1 and resumed[-1].done and resumed[-1].last_line == max(lines, after)
    assert_frame_equal(pl.concat([c.rows for c in resumed]), expected_rows.filter(pl.col("line_number") > after))
    assert [(r, n) for c in resumed for r, n in zip(c.rejected["reason"], c.rejected["line_number"], strict=True)] == [
        (r, n) for r, n in expected_rejected if n > after
    ]
