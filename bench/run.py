"""`make bench`: the lake engine against DuckDB and against its own targets (issue 8), in one run.

Every measurement runs ``--runs`` times (at least 3; 1 with ``--quick``), alternating the
contenders, and reports the median with the min-max spread; wall time, peak resident memory and
CPU seconds come from GNU time (``/usr/bin/time -v``) around a whole process. Generated data and
the big lake are cached under bench/data and never timed. Results print as a table and go to
bench/results/<timestamp>.json.

    python bench/run.py [--runs 3] [--quick] [--events N] [--lake-events N] [--batch-events N]
                        [--big-file-events N] [--days N] [--orgs N]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from include.audit import lake as lk  # noqa: E402

DATA = REPO / "bench" / "data"
RESULTS = REPO / "bench" / "results"
NOW = "2026-11-26T12:00:00+00:00"
PY = sys.executable
GNU_TIME = "/usr/bin/time"
CLI = [PY, "-m", "include.audit"]
CHUNK_EVENTS = 1_000_000  # the generator holds its output in memory: bigger sets are made in chunks


@dataclass(frozen=True)
class Sizes:
    """How big each measurement's data is (the full run and ``--quick``)."""

    events: int = 1_000_000  # 1: ingest vs DuckDB, 4: compaction, 5: export
    lake_events: int = 5_000_000  # 2: the big lake under the batch
    batch_events: int = 7_000  # 2: one 10-minute batch
    big_file_events: int = 4_000_000  # 3: one raw file of ~1.4 GB
    days: int = 3
    orgs: int = 200


QUICK = Sizes(events=50_000, lake_events=200_000, batch_events=2_000, big_file_events=100_000)


@dataclass
class Measure:
    """Repeated samples of one quantity."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self) -> dict:
        return {"median": self.median, "min": min(self.samples), "max": max(self.samples), "samples": self.samples}

    def __str__(self) -> str:
        return f"{self.median:.2f} ({min(self.samples):.2f}-{max(self.samples):.2f})"


@dataclass(frozen=True)
class Sample:
    """One run of a command: wall seconds, peak resident MiB, CPU seconds (user + system, the
    whole tree) and whether it was killed at the memory cap."""

    wall_s: float
    peak_mib: float
    cpu_s: float
    capped: bool = False


@dataclass
class Contender:
    """Wall seconds, peak MiB and CPU seconds of one command over the runs."""

    wall_s: Measure = field(default_factory=Measure)
    peak_mib: Measure = field(default_factory=Measure)
    cpu_s: Measure = field(default_factory=Measure)
    capped_runs: int = 0  # runs killed at the memory cap: their peak is a lower bound, their wall meaningless

    def add(self, sample: Sample) -> None:
        self.wall_s.samples.append(sample.wall_s)
        self.peak_mib.samples.append(sample.peak_mib)
        self.cpu_s.samples.append(sample.cpu_s)
        self.capped_runs += sample.capped

    def as_dict(self) -> dict:
        return {
            "wall_s": self.wall_s.as_dict(),
            "peak_mib": self.peak_mib.as_dict(),
            "cpu_s": self.cpu_s.as_dict(),
            "capped_runs": self.capped_runs,
        }


_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
_CPU = re.compile(r"(?:User|System) time \(seconds\): ([\d.]+)")


def run_measured(args: list[str], cap_mib: float | None = None) -> Sample:
    """Run a command to completion: its wall seconds, peak resident MiB, CPU seconds and whether it
    was capped. CPU next to wall says how much of a 2-core machine the run kept busy.

    The peak is the larger of GNU time -v's (the largest single process) and the sum over the
    command's process tree sampled every 50 ms: ingest runs Great Expectations in a worker process,
    and both count. A worker the validation server forked for the run is not in its tree: it is
    counted as if it were (its memory in the sum, its CPU as last sampled; the bench runs one
    command at a time). With ``cap_mib``, a command whose tree passes the cap is killed (this
    machine is shared): its peak is then what was seen when it was stopped, a lower bound.
    """
    import psutil

    report, errors = DATA / ".time", DATA / ".stderr"
    start = time.perf_counter()
    with errors.open("wb") as sink:  # a file, not a pipe: a pipe nobody reads while we sample could fill up
        proc = subprocess.Popen(
            [GNU_TIME, "-v", "-o", str(report), *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    seen, capped, worker_cpu = 0.0, False, {}
    while not capped and proc.poll() is None:
        workers = _validation_workers()  # one scan of the process table per sample
        seen = max(seen, _rss_mib([*_children(proc.pid), *workers]))
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = worker.cpu_times()
                worker_cpu[worker.pid] = times.user + times.system
        capped = bool(cap_mib) and seen > cap_mib
        if capped:
            for child in _children(proc.pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        time.sleep(0.05)
    proc.wait()
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 and not capped:
        raise SystemExit(f"bench: {' '.join(args)} failed: {errors.read_text(errors='replace')[-2000:]}")
    text = report.read_text()  # GNU time reports a killed command too: its figures up to the kill
    match = _MAX_RSS.search(text)
    assert match, "GNU time printed no maximum resident set size"
    cpu = sum(float(seconds) for seconds in _CPU.findall(text))  # GNU time counts waited-for children too
    return Sample(elapsed, max(int(match.group(1)) / 1024, seen), cpu + sum(worker_cpu.values()), capped=capped)


def _children(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _validation_workers() -> list:
    """The Great Expectations workers that validation servers forked (for the command being measured)."""
    import psutil

    workers = []
    for process in psutil.process_iter(["cmdline"]):
        if "serve_forks" in " ".join(process.info["cmdline"] or []):
            workers += _children(process.pid)
    return workers


def _rss_mib(processes: list) -> float:
    """Resident MiB of ``processes`` now (0 for any that already ended): a command's descendants and
    the validation workers forked for it."""
    import psutil

    total = 0
    for child in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total / 2**20


def alternate(runs: int, commands: dict[str, callable], cap_mib: float | None = None) -> dict[str, Contender]:
    """Run each contender ``runs`` times, swapping who goes first every run; ``commands`` give argv."""
    out = {name: Contender() for name in commands}
    names = list(commands)
    for i in range(runs):
        for name in names if i % 2 == 0 else reversed(names):
            sample = run_measured(commands[name](), cap_mib)
            out[name].add(sample)
            print(
                f"  {name}: {sample.wall_s:.2f} s, {sample.peak_mib:.0f} MiB, CPU {sample.cpu_s:.1f} s"
                + (" (killed at the memory cap)" if sample.capped else ""),
                flush=True,
            )
    return out


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def copy_of(source: Path, target: Path) -> Path:
    """A real copy (not links: nothing a run writes may reach the cached original)."""
    shutil.copytree(source, fresh(target))
    return target


# --- data (cached, never timed) -------------------------------------------------------------------------------------


def generated(
    name: str, events: int, days: int, orgs: int, *, seed: int = 7, plain: bool = False, clean: bool = False
) -> Path:
    """Raw files from the project's generator under bench/data/<name>, made in chunks of 1M events.

    Each chunk has its own seed (so its own event ids); its files are renamed with a chunk prefix.
    ``clean``: no bad lines (re-deliveries stay), so that DuckDB's bare conversion can read them.
    """
    raw = DATA / name
    marker = raw / "_expected.json"
    if marker.exists():
        return raw
    fresh(raw)
    print(f"  generating {events:,} events over {days} days and {orgs} organizations -> {raw} ...", flush=True)
    reports = []
    for chunk, start in enumerate(range(0, events, CHUNK_EVENTS)):
        part = fresh(DATA / f"{name}.part")
        done = subprocess.run(
            [
                *CLI,
                "generate",
                "--raw-root",
                str(part),
                "--events",
                str(min(CHUNK_EVENTS, events - start)),
                "--days",
                str(days),
                "--orgs",
                str(orgs),
                "--producers",
                "4",
                "--seed",
                str(seed + chunk),
                "--now",
                NOW,
                *(["--no-gzip"] if plain else []),
                *(["--bad-share", "0"] if clean else []),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        reports.append(json.loads(done.stdout))
        for file in part.rglob("*.json*"):
            target = raw / file.parent.relative_to(part) / f"c{chunk}-{file.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            file.rename(target)
        shutil.rmtree(part)
    marker.write_text(json.dumps(reports) + "\n")
    return raw


def one_file(name: str, source: Path, suffix: str) -> Path:
    """All of ``source``'s raw files as one file (``.jsonl`` or ``.jsonl.gz``) alone in bench/data/<name>/."""
    target = DATA / name / f"events{suffix}"
    if target.exists():
        return target.parent
    fresh(target.parent).mkdir(parents=True)
    parts = sorted(p for p in source.rglob("*.jsonl*"))
    partial = target.with_name(".partial")
    with gzip.open(partial, "wb", compresslevel=1) if suffix.endswith(".gz") else open(partial, "wb") as out:
        for part in parts:
            with gzip.open(part, "rb") if part.suffix == ".gz" else open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    partial.rename(target)
    return target.parent


def ingest_args(raw: Path, lake: Path) -> list[str]:
    return [*CLI, "ingest", "--raw-root", str(raw), "--lake-root", str(lake), "--now", NOW]


def built_lake(raw: Path, name: str) -> Path:
    """The lake of ``raw`` after ingest and compaction, built once and kept under bench/data/<name>."""
    lake = DATA / name
    marker = lake / "_bench_built"
    if not marker.exists():
        print(f"  building {lake} (ingest + compact, once) ...", flush=True)
        fresh(lake)
        for step in (ingest_args(raw, lake), [*CLI, "compact", "--lake-root", str(lake)]):
            subprocess.run(step, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        marker.touch()
    return lake


# --- lake facts -----------------------------------------------------------------------------------------------------


def live_files(lake: Path):
    from deltalake import DeltaTable

    return lk.live_files(DeltaTable(str(lake / "events")))


def files_per_partition(lake: Path) -> dict:
    """How many live files each (event_date, organization_id) partition of the events table has."""
    import polars as pl

    counts = live_files(lake).group_by("event_date", "organization_id").agg(pl.len().alias("files"))["files"]
    return {
        "partitions": counts.len(),
        "files": int(counts.sum()),
        "max_per_partition": int(counts.max()),
        "median_per_partition": float(counts.median()),
        "events": int(live_files(lake)["rows"].sum()),
    }


def largest_partition(lake: Path) -> dict:
    """The organization-day with the most rows, and its live data files (absolute paths)."""
    import polars as pl

    files = live_files(lake)
    sizes = files.group_by("event_date", "organization_id").agg(pl.col("rows").sum()).sort("rows", descending=True)
    day, org, rows = sizes.row(0)
    paths = files.filter((pl.col("event_date") == day) & (pl.col("organization_id") == org))["path"]
    return {
        "date": day.isoformat(),
        "organization_id": org,
        "rows": rows,
        "files": [str(lake / "events" / p) for p in paths],
    }


# --- measurements ---------------------------------------------------------------------------------------------------


def ingest_vs_duckdb(raw: Path, batch: Path, runs: int) -> dict[str, Contender]:
    """1. The whole ingest process vs DuckDB's bare partitioned conversion, each on a fresh output folder.

    ``project`` is the steady state of a deployment that ingests every 10 minutes: the validation
    server is warm (one untimed run of ``batch`` first), as the previous run left it.
    ``project, no GE server`` imports GE in each run (``AUDIT_VALIDATION_SERVER_IDLE_SECONDS=0``),
    as the first run on a host does.
    """
    subprocess.run(ingest_args(batch, fresh(DATA / "lake-warm-up")), cwd=REPO, check=True, capture_output=True)
    return alternate(
        runs,
        {
            "project": lambda: ingest_args(raw, fresh(DATA / "lake-1")),
            "project, no GE server": lambda: [
                "env",
                "AUDIT_VALIDATION_SERVER_IDLE_SECONDS=0",
                *ingest_args(raw, fresh(DATA / "lake-1")),
            ],
            "duckdb": lambda: [PY, "bench/duckdb_baseline.py", "ingest", str(raw), str(fresh(DATA / "duckdb-1"))],
        },
    )


def plain_ingest_vs_duckdb(raw: Path, runs: int) -> dict[str, Contender]:
    """1b. The same events as plain ``.jsonl`` files: the issue's baseline query word for word (its glob
    is ``*.jsonl``). DuckDB gains more than the project from not inflating gzip, so this ratio is the
    stricter one. The validation server is warm from step 1."""
    return alternate(
        runs,
        {
            "project": lambda: ingest_args(raw, fresh(DATA / "lake-1-plain")),
            "duckdb": lambda: [PY, "bench/duckdb_baseline.py", "ingest", str(raw), str(fresh(DATA / "duckdb-1"))],
        },
    )


def at_least(runs: int, floor: int) -> int:
    """``runs`` raised to ``floor`` for a cheap measurement whose ratio is noisy; ``--quick``'s one run stays one."""
    return max(runs, floor) if runs > 1 else 1


def growth(batch: Path, big_lake: Path, runs: int) -> dict[str, Contender]:
    """2. One batch file on an empty lake vs on a fresh copy of the big lake (copying is not timed).

    With ``--lake-events`` equal to ``--events`` the big lake is measurement 4's compacted lake. At
    least 7 runs each: a run takes ~1.5 s, and with 3 the ratio of two such medians moved 1.21-1.30
    between two runs of the harness where 7 by hand gave 1.11-1.12.
    """
    return alternate(
        at_least(runs, 7),
        {
            "empty": lambda: ingest_args(batch, fresh(DATA / "lake-growth-empty")),
            "big": lambda: ingest_args(batch, copy_of(big_lake, DATA / "lake-growth-big")),
        },
    )


BIG_FILE_CAP_MIB = 4096  # 4x the target: enough to show a miss without exhausting a shared machine


def big_file(raw: Path, runs: int) -> dict[str, Contender]:
    """3. One ~1.4 GB JSON Lines file into an empty lake (killed past ``BIG_FILE_CAP_MIB``)."""
    return alternate(runs, {"project": lambda: ingest_args(raw, fresh(DATA / "lake-big-file"))}, BIG_FILE_CAP_MIB)


def compaction(lake: Path, runs: int) -> tuple[dict[str, Contender], dict, dict]:
    """4. `compact` on copies of the 1M lake: its cost, and files per partition before and after."""
    before = files_per_partition(lake)
    work = DATA / "lake-compact"
    timing = alternate(runs, {"compact": lambda: [*CLI, "compact", "--lake-root", str(copy_of(lake, work))]})
    return timing, before, files_per_partition(work)


def export_vs_duckdb(lake: Path, runs: int) -> tuple[dict[str, Contender], dict]:
    """5. The largest organization-day to CSV: the export command vs a DuckDB process on the same files."""
    part = largest_partition(lake)
    day = part["date"]
    out = DATA / "exports"
    out.mkdir(exist_ok=True)
    timing = alternate(
        at_least(runs, 5),
        {
            "project": lambda: [
                *CLI,
                "export",
                "--lake-root",
                str(lake),
                "--org",
                part["organization_id"],
                "--start",
                f"{day}T00:00:00Z",
                "--end",
                f"{day}T23:59:59.999999Z",
                "--out",
                str(out / "project.csv"),
            ],
            "duckdb": lambda: [PY, "bench/duckdb_baseline.py", "export", str(out / "duckdb.csv"), *part["files"]],
        },
    )
    part["same_rows"] = _csv_rows(out / "project.csv") == _csv_rows(out / "duckdb.csv")
    return timing, {k: v for k, v in part.items() if k != "files"} | {"live_files": len(part["files"])}


def _csv_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f) - 1


def dag_parse_times(runs: int) -> dict[str, Measure]:
    """6. Each DAG file's import time, with Airflow itself already imported (as in the dag-processor)."""
    probe = (
        "import sys, time, runpy; import airflow.sdk; t = time.perf_counter(); runpy.run_path(sys.argv[1]);"
        " print(time.perf_counter() - t)"
    )
    out = {}
    for path in sorted((REPO / "dags").glob("*.py")):
        m = Measure()
        for _ in range(max(runs, 3)):
            done = subprocess.run(
                [PY, "-c", probe, str(path)],
                cwd=REPO,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                check=True,
            )
            m.samples.append(float(done.stdout.strip().splitlines()[-1]))
        out[path.stem] = m
    return out


# --- report ---------------------------------------------------------------------------------------------------------


def machine() -> dict:
    import psutil

    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            p: version(p) for p in ("polars", "pyarrow", "deltalake", "duckdb", "apache-airflow", "great-expectations")
        },
    }


def verdict(value: float, limit: float, strict: bool = False) -> str:
    return "met" if (value < limit if strict else value <= limit) else "MISSED"


def summary(f: dict, sizes: Sizes) -> list[tuple[str, str, str, str, str]]:
    """Rows of (measurement, project, baseline, ratio, target: verdict)."""
    ing, gr, big, comp, exp = f["ingest"], f["growth"], f["big_file"], f["compaction"], f["export"]
    med = lambda c, k="wall_s": c[k]["median"]  # noqa: E731
    rng = lambda c, k="wall_s": f"{c[k]['median']:.2f} ({c[k]['min']:.2f}-{c[k]['max']:.2f})"  # noqa: E731
    mib = lambda c: f"{c['peak_mib']['median']:,.0f} MiB"  # noqa: E731
    return [
        (
            f"ingest {sizes.events:,} events, s",
            rng(ing["project"]),
            rng(ing["duckdb"]),
            f"{f['ingest_ratio']:.2f}",
            f"<= 3: {verdict(f['ingest_ratio'], 3)}",
        ),
        ("  its peak memory", mib(ing["project"]), mib(ing["duckdb"]), "", ""),
        ("  its CPU (user + system), s", rng(ing["project"], "cpu_s"), rng(ing["duckdb"], "cpu_s"), "", ""),
        (
            "  without the GE server (a cold host), s",
            rng(ing["project, no GE server"]),
            rng(ing["duckdb"]),
            f"{f['ingest_ratio_no_server']:.2f}",
            "",
        ),
        (
            "  the same events as plain .jsonl, s",
            rng(f["ingest_plain"]["project"]),
            rng(f["ingest_plain"]["duckdb"]),
            f"{f['ingest_plain_ratio']:.2f}",
            f"<= 3: {verdict(f['ingest_plain_ratio'], 3)}",
        ),
        (
            "  its CPU (user + system), s",
            rng(f["ingest_plain"]["project"], "cpu_s"),
            rng(f["ingest_plain"]["duckdb"], "cpu_s"),
            "",
            "",
        ),
        (
            f"{sizes.batch_events:,}-event batch on a {sizes.lake_events:,} lake (vs empty), s",
            rng(gr["big"]),
            rng(gr["empty"]),
            f"{f['growth_wall_ratio']:.2f}",
            f"<= 1.3: {verdict(f['growth_wall_ratio'], 1.3)}",
        ),
        (
            "  its peak memory",
            mib(gr["big"]),
            mib(gr["empty"]),
            f"{f['growth_rss_ratio']:.2f}",
            f"<= 1.3: {verdict(f['growth_rss_ratio'], 1.3)}",
        ),
        (
            f"one {f['big_file_bytes'] / 1e9:.2f} GB file ({sizes.big_file_events:,} events), peak MiB",
            f"{'> ' if big['project']['capped_runs'] else ''}{med(big['project'], 'peak_mib'):,.0f}",
            "",
            "",
            f"< 1024: {verdict(med(big['project'], 'peak_mib'), 1024, strict=True)}",
        ),
        ("  its wall, s", rng(big["project"]), "", "", ""),
        (
            "files per partition after compact (max)",
            str(comp["after"]["max_per_partition"]),
            f"before: {comp['before']['files']:,} files, max {comp['before']['max_per_partition']}",
            "",
            f"<= 1: {verdict(comp['after']['max_per_partition'], 1)}",
        ),
        ("  compact wall, s", rng(comp["timing"]["compact"]), "", "", ""),
        (
            f"export one org-day ({exp['partition']['rows']:,} rows), s",
            rng(exp["timing"]["project"]),
            rng(exp["timing"]["duckdb"]),
            f"{f['export_ratio']:.2f}",
            f"<= 1.5: {verdict(f['export_ratio'], 1.5)}",
        ),
        *(
            (f"parse {k}, s", str(Measure(v["samples"])), "", "", f"< 0.5: {verdict(v['median'], 0.5, True)}")
            for k, v in f["dag_parse_s"].items()
        ),
    ]


def print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("measurement", "project", "baseline", "ratio", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def positive(text: str) -> int:
    """An argparse type: a whole number above zero (anything else is a one-line usage error, exit 2)."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=positive, default=3, help="runs per measurement (at least 3 unless --quick)")
    parser.add_argument("--quick", action="store_true", help="small data and one run: a smoke test of the harness")
    for name, default in Sizes().__dict__.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=positive,
            help=f"default {default:,} ({QUICK.__dict__[name]:,} with --quick)",
        )
    args = parser.parse_args()
    sizes, runs = (QUICK, 1) if args.quick else (Sizes(), max(3, args.runs))
    sizes = replace(sizes, **{k: v for k, v in vars(args).items() if k in sizes.__dict__ and v is not None})
    tag = "-quick" if args.quick else ""
    DATA.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "started_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "runs": runs,
        "sizes": sizes.__dict__,
        "quick": args.quick,
    }
    f: dict = {}

    print("preparing data (cached)", flush=True)
    raw = generated(f"raw-{sizes.events}-clean{tag}", sizes.events, sizes.days, sizes.orgs, clean=True)
    plain = generated(
        f"raw-{sizes.events}-clean-plain{tag}", sizes.events, sizes.days, sizes.orgs, clean=True, plain=True
    )
    batch = one_file(
        f"batch-{sizes.batch_events}{tag}",
        generated(f"raw-batch-{sizes.batch_events}{tag}", sizes.batch_events, 1, sizes.orgs, seed=900),
        ".jsonl.gz",
    )
    big_raw = generated(
        f"raw-big-{sizes.big_file_events}{tag}", sizes.big_file_events, sizes.days, sizes.orgs, seed=500, plain=True
    )
    big = one_file(f"big-file-{sizes.big_file_events}{tag}", big_raw, ".jsonl")
    f["raw_gzip_bytes"] = sum(p.stat().st_size for p in raw.rglob("*.gz"))
    f["big_file_bytes"] = sum(p.stat().st_size for p in big.iterdir())

    print(f"1. ingest {sizes.events:,} events: project vs DuckDB", flush=True)
    f["ingest"] = {k: c.as_dict() for k, c in ingest_vs_duckdb(raw, batch, runs).items()}
    lake1 = copy_of(DATA / "lake-1", DATA / "lake-1-kept")
    print(f"1b. ingest the same {sizes.events:,} events as plain .jsonl: project vs DuckDB", flush=True)
    f["ingest_plain"] = {k: c.as_dict() for k, c in plain_ingest_vs_duckdb(plain, runs).items()}
    print(f"3. one {f['big_file_bytes'] / 1e9:.2f} GB raw file", flush=True)
    f["big_file"] = {k: c.as_dict() for k, c in big_file(big, runs).items()}
    print(f"4. compaction of the {sizes.events:,}-event lake", flush=True)
    timing, before, after = compaction(lake1, runs)
    f["compaction"] = {"timing": {k: c.as_dict() for k, c in timing.items()}, "before": before, "after": after}
    print(f"2. a {sizes.batch_events:,}-event batch on an empty lake vs a {sizes.lake_events:,}-event lake", flush=True)
    big_lake = (
        DATA / "lake-compact"
        if sizes.lake_events == sizes.events
        else built_lake(
            generated(f"raw-lake-{sizes.lake_events}{tag}", sizes.lake_events, sizes.days, sizes.orgs, seed=100),
            f"lake-{sizes.lake_events}{tag}",
        )
    )
    f["growth"] = {k: c.as_dict() for k, c in growth(batch, big_lake, runs).items()}
    print("5. one organization-day export: project vs DuckDB", flush=True)
    timing, part = export_vs_duckdb(DATA / "lake-compact", runs)
    f["export"] = {"timing": {k: c.as_dict() for k, c in timing.items()}, "partition": part}
    print("6. DAG parse time", flush=True)
    f["dag_parse_s"] = {k: m.as_dict() for k, m in dag_parse_times(runs).items()}

    ratio = lambda a, b, k="wall_s": a[k]["median"] / b[k]["median"]  # noqa: E731
    f["ingest_ratio"] = ratio(f["ingest"]["project"], f["ingest"]["duckdb"])
    f["ingest_ratio_no_server"] = ratio(f["ingest"]["project, no GE server"], f["ingest"]["duckdb"])
    f["ingest_plain_ratio"] = ratio(f["ingest_plain"]["project"], f["ingest_plain"]["duckdb"])
    f["growth_wall_ratio"] = ratio(f["growth"]["big"], f["growth"]["empty"])
    f["growth_rss_ratio"] = ratio(f["growth"]["big"], f["growth"]["empty"], "peak_mib")
    f["export_ratio"] = ratio(f["export"]["timing"]["project"], f["export"]["timing"]["duckdb"])
    results["figures"] = f
    results["summary"] = summary(f, sizes)
    print()
    print_table(results["summary"])
    folder = DATA / "results" if args.quick else RESULTS  # a smoke test's figures are not results to keep
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}{tag}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nresults: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
