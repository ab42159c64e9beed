"""The command line contract: flags, env-var roots, JSON output, exit codes, one-line errors."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from .helpers import event, write_lines

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "include.audit", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_full_flow_through_the_cli_with_env_roots(roots):
    done = cli("generate", "--events", "300", "--days", "2", "--orgs", "3", "--now", "2026-11-26T12:00:00Z")
    assert done.returncode == 0, done.stderr
    expected = json.loads(done.stdout)
    done = cli("ingest", "--now", "2026-11-26T12:00:00Z")
    summary = json.loads(done.stdout)
    assert done.returncode == 0 and summary["ingested"] == 300 and summary["quarantined"] == expected["bad"]
    assert set(summary) >= {"files", "lines", "ingested", "duplicates", "quarantined"}
    done = cli("export-daily", "--date", "2026-11-25")
    assert done.returncode == 0 and json.loads(done.stdout)["rows"] > 0
    out = Path(roots["exports"]) / "on-demand.csv"
    done = cli(
        "export",
        "--org",
        "acme-001",
        "--start",
        "2026-11-24T00:00:00Z",
        "--end",
        "2026-11-26T12:00:00Z",
        "--action",
        "CreateJobRun",
        "DeleteFile",
        "--search",
        "a",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text().startswith("time,organization_id,user,action,")
    done = cli("retain", "--today", "2026-11-26")
    assert done.returncode == 0 and json.loads(done.stdout)["dropped"] == []
    done = cli("status")
    assert json.loads(done.stdout)["events"] == 300


def test_an_on_demand_export_imports_only_what_it_needs(roots):
    """The export is a short command beside DuckDB (issue 8: at most 1.5x): no pandas, no
    pyarrow.dataset, no Great Expectations, no cryptography (only an archive entry is signed), and
    for a local lake no fsspec (~50 ms: local files are read with os and polars)."""
    write_lines(Path(roots["raw"]) / "a.jsonl", [event(event_id="e1", organization_id="acme-001")])
    assert cli("ingest", "--now", "2026-11-26T12:00:00Z").returncode == 0
    heavy = ("pandas", "pyarrow.dataset", "great_expectations", "cryptography", "airflow", "fsspec")
    code = (
        "import sys\n"
        "from include.audit.cli import main\n"
        "rc = main(['export', '--org', 'acme-001', '--start', '2026-11-20T00:00:00Z', '--end', '2026-11-26T12:00:00Z',"
        f" '--out', {str(Path(roots['exports']) / 'one.csv')!r}])\n"
        f"print(rc, [m for m in {heavy!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 []"
    assert (Path(roots["exports"]) / "one.csv").read_text().count("\n") == 2  # the header and the event


def test_explicit_flags_win_over_env(roots, tmp_path):
    write_lines(tmp_path / "elsewhere" / "a.jsonl", [event()])
    done = cli("ingest", "--raw-root", str(tmp_path / "elsewhere"), "--now", "2026-11-26T12:00:00Z")
    assert json.loads(done.stdout)["ingested"] == 1
    assert (Path(roots["lake"]) / "events").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "--org", "acme", "--start", "2026-11-24T00:00:00", "--end", "2026-11-25T00:00:00Z"], "no timezone"),
        (["export", "--org", "acme", "--start", "2026-11-26T00:00:00Z", "--end", "2026-11-25T00:00:00Z"], "after end"),
        (
            ["export", "--org", "../../etc", "--start", "2026-11-24T00:00:00Z", "--end", "2026-11-25T00:00:00Z"],
            "invalid organization id",
        ),
        (
            [
                "export",
                "--org",
                "acme",
                "--start",
                "2026-11-24T00:00:00Z",
                "--end",
                "2026-11-25T00:00:00Z",
                "--action",
                "Bogus",
            ],
            "unknown action",
        ),
        (["export-daily", "--date", "2026-11-31"], "not a date"),
        (["retain", "--today", "today"], "not a date"),
        (["ingest", "--now", "2026-11-26T12:00:00"], "no timezone"),
        (["export", "--org", "acme"], "required"),
        (["frobnicate"], "invalid choice"),
        (["vacuum", "--hours", "a week"], "must be a whole number, got 'a week'"),
        (["vacuum", "--hours", "-1"], "must be at least 0"),
        (["generate", "--bad-share", "some"], "must be a number between 0 and 1"),
        (["vacuum", "--hours", "18446744073709551615"], "must be at most 876000"),
        (["ingest", "--days", "1000000"], "must be at most 36500"),
        (["ingest", "--now", "0001-01-01T00:00:00Z"], "outside the years 1970-8999"),
        (["replay", "--now", "9999-12-31T23:59:59Z", "--dry-run"], "outside the years 1970-8999"),
        (["export-daily", "--date", "0001-01-01"], "outside the years 1970-8999"),
        (["retain", "--today", "9999-12-31"], "outside the years 1970-8999"),
        # an empty value is a typo, never the default (all partitions, the current time, no key check)
        (["compact", "--date", ""], "--date '' is not a date"),
        (["ingest", "--now", " "], "--now ' ' is not an ISO 8601 time"),
        (["compact", "--lake-root", ""], "--lake-root is empty"),
        # a root URL without a bucket, with a scheme no filesystem knows, or a lake where Delta cannot be
        (["retain", "--today", "2026-11-26", "--lake-root", "s3://"], "--lake-root: s3:// names no bucket"),
        (["ingest", "--raw-root", "s3:///"], "--raw-root: s3:/// names no bucket"),
        (
            ["ingest", "--raw-root", "nosuchfs://bucket/raw"],
            "--raw-root: nosuchfs://bucket/raw uses the unknown scheme",
        ),
        (["status", "--lake-root", "nosuchfs://bucket/lake"], "the lake's Delta tables need a local path or an s3://"),
        (["compact", "--lake-root", "memory://lake"], "the lake's Delta tables need a local path or an s3:// root"),
        (["verify", "--public-key", ""], "cannot read an Ed25519 public key"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(roots, tmp_path, args, message):
    out = tmp_path / "out.csv"
    done = cli(*args, *(["--out", str(out)] if args[0] == "export" and len(args) > 2 else []))
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not out.exists() and not Path(roots["lake"]).exists()


def test_vacuum_hours_0_removes_a_killed_writers_files_now(roots):
    write_lines(Path(roots["raw"]) / "a.jsonl", [event()])
    assert cli("ingest", "--now", "2026-11-26T12:00:00Z").returncode == 0
    stray = next((Path(roots["lake"]) / "events").glob("event_date=*/organization_id=*")) / "part-killed.parquet"
    stray.write_bytes(b"PAR1 left by a killed writer")
    done = cli("vacuum")  # the default keeps a day-old file: this one is seconds old
    assert done.returncode == 0 and stray.exists()
    done = cli("vacuum", "--hours", "0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["retention_hours"] == 0 and not stray.exists()
    assert json.loads(cli("status").stdout)["events"] == 1


def test_a_panic_inside_delta_rs_is_one_line_exit_1(roots, monkeypatch, capsys):
    """pyo3's PanicException is not an Exception: the CLI still reports it in one line, no traceback."""
    from include.audit import cli as command_line
    from include.audit import maintenance

    write_lines(Path(roots["raw"]) / "a.jsonl", [event()])
    assert cli("ingest", "--now", "2026-11-26T12:00:00Z").returncode == 0

    real_vacuum = maintenance.vacuum

    def vacuum_out_of_range(lake_url, hours):  # the real delta-rs, given what once reached it from --hours
        return real_vacuum(lake_url, 3_000_000_000_000)

    monkeypatch.setattr(maintenance, "vacuum", vacuum_out_of_range)
    capsys.readouterr()
    assert command_line.main(["vacuum", "--lake-root", roots["lake"]]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "PanicException" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize(
    "args, flag",
    [
        (["ingest", "--raw-root", "{file}"], "--raw-root"),
        (["ingest", "--lake-root", "{file}"], "--lake-root"),
        (["status", "--lake-root", "{file}"], "--lake-root"),
        (["verify", "--export-root", "{file}"], "--export-root"),
        (["hold", "list", "--export-root", "{file}"], "--export-root"),
    ],
)
def test_a_root_that_is_a_file_is_one_line_exit_2(roots, tmp_path, args, flag):
    file = tmp_path / "a-file"
    file.write_text("hi")
    write_lines(Path(roots["raw"]) / "a.jsonl", [event()])
    done = cli(*[a.format(file=file) for a in args], "--now", "2026-11-26T12:00:00Z") if args[0] == "ingest" else None
    done = done or cli(*[a.format(file=file) for a in args])
    assert done.returncode == 2 and done.stderr == f"error: {flag}: {file} is a file, not a folder\n"
    assert file.read_text() == "hi" and not Path(roots["lake"]).exists()


@pytest.mark.parametrize(
    "out, message", [("", "is a folder"), (".", "is a folder"), ("{file}/x.csv", "which is a file")]
)
def test_an_export_out_that_cannot_be_a_file_is_one_line_exit_2(roots, tmp_path, out, message):
    file = tmp_path / "a-file"
    file.write_text("hi")
    write_lines(Path(roots["raw"]) / "a.jsonl", [event()])
    assert cli("ingest", "--now", "2026-11-26T12:00:00Z").returncode == 0
    window = ["--org", "acme", "--start", "2026-11-25T00:00:00Z", "--end", "2026-11-26T00:00:00Z"]
    done = cli("export", *window, "--out", out.format(file=file))
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.splitlines()) == 1
    assert file.read_text() == "hi"


def test_a_free_text_value_may_start_with_a_dash(roots, tmp_path):
    write_lines(Path(roots["raw"]) / "a.jsonl", [event(), event(event_id="evt-2", user_email="bot@acme.com")])
    assert cli("ingest", "--now", "2026-11-26T12:00:00Z").returncode == 0
    window = ["--org", "acme", "--start", "2026-11-25T00:00:00Z", "--end", "2026-11-26T00:00:00Z"]
    for flags in (["--query", "-user:bot@acme.com"], ["--query", "-user:bot@acme.com", "--search", "-"]):
        out = tmp_path / "out.csv"
        done = cli("export", *window, *flags, "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert [line.rsplit(",", 1)[-1] for line in out.read_text().splitlines()[1:]] == ["evt-1"]


def test_failures_are_one_line_exit_1(roots, tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    write_lines(Path(roots["raw"]) / "a.jsonl", [event()])
    done = cli("ingest", "--lake-root", str(blocker / "lake"), "--now", "2026-11-26T12:00:00Z")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args, flag",
    [
        (["status", "--lake-root", "/nonexistent/lake"], "--lake-root"),
        (["ingest", "--raw-root", "/nonexistent/raw"], "--raw-root"),
        (["export-daily", "--date", "2026-11-25", "--lake-root", "/nonexistent/lake"], "--lake-root"),
        (
            [
                "export",
                "--org",
                "acme",
                "--start",
                "2026-11-24T00:00:00Z",
                "--end",
                "2026-11-25T00:00:00Z",
                "--lake-root",
                "/nonexistent/lake",
                "--out",
                "OUT",
            ],
            "--lake-root",
        ),
        (["retain", "--today", "2026-11-26", "--lake-root", "/nonexistent/lake"], "--lake-root"),
        (["api-key", "create", "--org", "acme", "--lake-root", "/nonexistent/lake"], "--lake-root"),
    ],
)
def test_a_root_that_does_not_exist_is_one_line_exit_2(roots, tmp_path, args, flag):
    out = tmp_path / "out.csv"
    done = cli(*[str(out) if a == "OUT" else a for a in args])
    assert (done.returncode, done.stdout) == (2, "")
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: {flag}: /nonexistent/") and line.endswith("does not exist")
    assert not any(Path(p).exists() for p in roots.values()) and not out.exists()
    assert not Path("/nonexistent").exists()


def test_a_missing_root_named_by_a_variable_says_so(roots):
    done = cli("status", env={"AUDIT_LAKE_ROOT": "/nonexistent/lake"})
    assert done.returncode == 2 and done.stderr == "error: $AUDIT_LAKE_ROOT: /nonexistent/lake does not exist\n"


def test_ingest_creates_a_missing_lake_and_a_missing_export_root_is_made_by_export_daily(roots):
    write_lines(Path(roots["raw"]) / "a.jsonl", [event()])
    done = cli("ingest", "--now", "2026-11-26T12:00:00Z")
    assert done.returncode == 0, done.stderr
    done = cli("export-daily", "--date", "2026-11-25")
    assert done.returncode == 0, done.stderr
    assert Path(roots["exports"]).is_dir()


@pytest.mark.s3
def test_a_missing_s3_bucket_or_prefix_is_one_line_exit_2(s3_env, s3_prefix):
    for lake in ("s3://no-such-bucket-audit/lake", f"{s3_prefix}/no-such-lake"):
        done = cli("status", "--lake-root", lake, "--export-root", lake)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr == f"error: --lake-root: {lake} does not exist\n"
    done = cli("ingest", "--raw-root", f"{s3_prefix}/raw", "--lake-root", f"{s3_prefix}/lake")
    assert done.returncode == 2 and "--raw-root" in done.stderr
    done = cli("generate", "--raw-root", f"{s3_prefix}/raw", "--events", "20", "--orgs", "1", "--days", "1")
    assert done.returncode == 0, done.stderr
    done = cli("ingest", "--raw-root", f"{s3_prefix}/raw", "--lake-root", f"{s3_prefix}/lake")
    assert done.returncode == 0, done.stderr


def test_verbose_shows_our_progress_without_library_noise(roots):
    assert cli("generate", "--events", "100", "--days", "1", "--orgs", "2").returncode == 0
    done = cli("-v", "ingest")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any("include.audit.ingest" in line and "ingested" in line for line in lines)
    stamps = [datetime.fromisoformat(line.split(" ", 1)[0]) for line in lines]  # each record is stamped in UTC
    assert all(s.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - s) < timedelta(minutes=10) for s in stamps)
    assert not [line for line in lines if "great_expectations" in line], lines[:5]
    assert len(lines) < 10


def test_an_unexpected_error_names_where_it_was_raised(monkeypatch, capsys):
    """One line, no traceback, but enough to find the bug: the raising frame and this package's frame."""
    from datetime import timedelta, timezone

    from include.audit import cli as audit_cli

    def failing(args):
        return timezone(timedelta(hours=25))  # raises ValueError inside the datetime module

    monkeypatch.setattr(audit_cli, "run", failing)
    monkeypatch.delenv("AUDIT_DEBUG", raising=False)
    assert audit_cli.main(["status", "--lake-root", "/tmp"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: ValueError: offset must be a timedelta")
    assert "test_cli.py:" in err and " in failing, from include/audit/cli.py:" in err and err.endswith(" in main)")


def test_roots_below_a_folder_with_spaces_and_percent_signs_work_end_to_end(tmp_path):
    """delta-rs names a table's files by percent-encoded URIs (``audit%20lake``): every command reads
    them at the names they have on disk."""
    base = tmp_path / "audit lake 100%"
    env = {f"AUDIT_{k.upper()}_ROOT": str(base / k) for k in ("raw", "lake", "export")}
    done = cli("generate", "--events", "400", "--days", "2", "--orgs", "2", "--now", "2026-11-26T12:00:00Z", env=env)
    assert done.returncode == 0, done.stderr
    for args in (
        ["ingest", "--now", "2026-11-26T12:00:00Z"],
        ["ingest", "--now", "2026-11-26T12:00:00Z"],  # a second run reads the lake to find repeats
        ["compact"],
        ["export-daily", "--date", "2026-11-25"],
        ["status"],
    ):
        done = cli(*args, env=env)
        assert done.returncode == 0, (args, done.stderr)
    written = {p.name for p in (base / "export").rglob("*.csv*")}
    assert written and all("2026-11-25" in name for name in written)
    org = json.loads(cli("status", env=env).stdout)
    out = base / "one org.csv"
    first = min((base / "export").rglob("*.csv*")).relative_to(base / "export").parts[0]
    done = cli(
        "export",
        "--org",
        first,
        "--start",
        "2026-11-24T00:00:00Z",
        "--end",
        "2026-11-26T12:00:00Z",
        "--out",
        str(out),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] > 0 and out.read_text().count("\n") > 1
    assert org["events"] > 0
