"""`make bench`: the pipeline against DuckDB, side by side, in one run.

Every measurement runs ``--runs`` times (at least 3), alternating the contenders, and reports the
median with the min-max spread. Results print as a table and go to bench/results/<timestamp>.json.

    python bench/run.py [--events 1000000] [--big-events 5000000] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from include.audit import lake as lk  # noqa: E402
from include.audit.exports import export_partition  # noqa: E402
from include.audit.generate import generate  # noqa: E402
from include.audit.storage import Root  # noqa: E402

DATA = REPO / "bench" / "data"
RESULTS = REPO / "bench" / "results"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PY = sys.executable


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
        return f"{self.median:8.2f}  ({min(self.samples):.2f}-{max(self.samples):.2f})"


GNU_TIME = "/usr/bin/time"


def run_measured(args: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run a command; its wall seconds and peak resident memory (MiB).

    Memory comes from GNU time (``%M``), which runs the command from a small process: a child
    forked straight from this one would inherit this process's resident size in its peak.
    """
    report = DATA / ".time"
    start = time.perf_counter()
    done = subprocess.run([GNU_TIME, "-f", "%M", "-o", str(report), *args], cwd=REPO,
                          env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    return elapsed, int(report.read_text().split()[-1]) / 1024


def dataset(events: int, days: int, orgs: int) -> Path:
    """Generated raw files (cached under bench/data: generation is not what we measure)."""
    raw = DATA / f"raw-{events}-{days}d-{orgs}o"
    marker = raw / "_expected.json"
    if not marker.exists():
        shutil.rmtree(raw, ignore_errors=True)
        print(f"generating {events:,} events over {days} days and {orgs} organizations -> {raw} ...", flush=True)
        done = subprocess.run([PY, "-m", "include.audit", "generate", "--raw-root", str(raw), "--events", str(events),
                               "--days", str(days), "--orgs", str(orgs), "--producers", "4", "--now", NOW.isoformat()],
                              cwd=REPO, capture_output=True, text=True, check=True)
        marker.write_text(done.stdout)
    return raw


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def ingest_pair(raw: Path, runs: int) -> dict[str, Measure]:
    """The project's full ingest vs DuckDB's bare conversion, alternating; wall time and peak memory."""
    out = {k: Measure() for k in ("project_s", "duckdb_s", "project_mib", "duckdb_mib")}
    project = [PY, "-m", "include.audit", "ingest", "--raw-root", str(raw), "--now", NOW.isoformat()]
    for i in range(runs):
        order = ("project", "duckdb") if i % 2 == 0 else ("duckdb", "project")
        for who in order:
            target = fresh(DATA / f"lake-{who}")
            args = project + ["--lake-root", str(target)] if who == "project" else \
                [PY, "bench/duckdb_baseline.py", "ingest", str(raw), str(target)]
            seconds, mib = run_measured(args)
            out[f"{who}_s"].samples.append(seconds)
            out[f"{who}_mib"].samples.append(mib)
            print(f"  ingest {who}: {seconds:.2f} s, {mib:.0f} MiB", flush=True)
    return out


def largest_partition(lake: Root) -> tuple[date, str]:
    sizes = {}
    for day in lk.event_dates(lake):
        for org in lk.organizations(lake, day):
            sizes[(day, org)] = sum(lake.fs.size(f) for f in lk.partition_files(lake, day, org))
    return max(sizes, key=sizes.__getitem__)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def export_pair(lake_dir: Path, runs: int) -> tuple[dict[str, Measure], dict]:
    """One organization-day (the largest) to CSV: the project's export vs DuckDB, in this process."""
    from bench.duckdb_baseline import export as duckdb_export

    lake, exports = Root.open(str(lake_dir)), Root.open(str(fresh(DATA / "exports-project")))
    day, org = largest_partition(lake)
    partition = lk.partition_dir(lake, day, org)
    out = {"project_s": Measure(), "duckdb_s": Measure()}
    for i in range(max(runs, 5)):
        pair = [("project", lambda: export_partition(lake, exports, day, org)),
                ("duckdb", lambda: duckdb_export(partition, str(DATA / "duckdb-export.csv")))]
        for who, fn in pair if i % 2 == 0 else reversed(pair):
            out[f"{who}_s"].samples.append(timed(fn))
    rows = lk.read_partition(lake, day, org, ["event_id"]).height
    return out, {"date": day.isoformat(), "organization_id": org, "rows": rows}


def lake_of_days(source: Path, target: Path, days: int) -> Path:
    """A lake of ``days`` event dates, made by hard-linking the source lake's partitions under new dates."""
    fresh(target)
    src_days = sorted((source / "events").glob("event_date=*"))
    for i in range(days):
        day = NOW.date() - timedelta(days=i)
        shutil.copytree(src_days[i % len(src_days)], target / "events" / f"event_date={day}",
                        copy_function=os.link)
    return target


def growth_pair(source: Path, runs: int) -> dict[str, Measure]:
    """Export cost of one organization-day from a 7-day lake vs a 90-day lake."""
    lakes = {n: Root.open(str(lake_of_days(source, DATA / f"lake-{n}d", n))) for n in (7, 90)}
    day, org = largest_partition(Root.open(str(lake_of_days(source, DATA / "lake-1d", 1))))
    exports = Root.open(str(fresh(DATA / "exports-growth")))
    out = {"7d_s": Measure(), "90d_s": Measure()}
    for i in range(max(runs, 5)):
        for n in ((7, 90) if i % 2 == 0 else (90, 7)):
            out[f"{n}d_s"].samples.append(timed(lambda n=n: export_partition(lakes[n], exports, day, org)))
    return out


def airflow_batch(runs: int, events: int) -> Measure:
    """A 10-minute batch at 10M events/day through `airflow dags test audit_ingest`, end to end."""
    home = DATA / "airflow"
    env = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(REPO),
           "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}", "GX_ANALYTICS_ENABLED": "false"}
    run_measured(["airflow", "db", "migrate"], env)
    now = datetime.now(UTC)
    raw = fresh(DATA / "raw-batch")
    generate(str(raw), events=events, days=1, organizations=200, producers=4, now=now - timedelta(minutes=1),
             bad_share=0.0005)
    out = Measure()
    for _ in range(runs):
        lake = fresh(DATA / "lake-batch")
        seconds, _ = run_measured(["airflow", "dags", "test", "audit_ingest"],
                                  {**env, "AUDIT_RAW_ROOT": str(raw), "AUDIT_LAKE_ROOT": str(lake)})
        out.samples.append(seconds)
        print(f"  airflow batch: {seconds:.2f} s", flush=True)
    return out


def dag_parse_times(runs: int) -> dict[str, Measure]:
    """Each DAG file's import time, with Airflow itself already imported (as in the dag-processor)."""
    probe = ("import sys, time, runpy; import airflow.sdk; t = time.perf_counter(); runpy.run_path(sys.argv[1]);"
             " print(time.perf_counter() - t)")
    out = {}
    for path in sorted((REPO / "dags").glob("*.py")):
        m = Measure()
        for _ in range(max(runs, 5)):
            done = subprocess.run([PY, "-c", probe, str(path)], cwd=REPO, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
            m.samples.append(float(done.stdout.strip().splitlines()[-1]))
        out[path.stem] = m
    return out


def machine() -> dict:
    import psutil

    return {"cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": {p: version(p) for p in ("polars", "pyarrow", "duckdb", "apache-airflow",
                                                 "great-expectations", "pandas", "fsspec")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--big-events", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--orgs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-events", type=int, default=70_000)
    parser.add_argument("--quick", action="store_true", help="100k/300k events, for trying the harness")
    args = parser.parse_args()
    if args.quick:
        args.events, args.big_events = 100_000, 300_000
    runs = max(3, args.runs)
    DATA.mkdir(parents=True, exist_ok=True)
    results: dict = {"started_at": datetime.now(UTC).isoformat(), "machine": machine(), "runs": runs,
                     "events": args.events, "big_events": args.big_events}

    print(f"1. ingest, {args.events:,} events", flush=True)
    raw = dataset(args.events, args.days, args.orgs)
    results["raw_bytes"] = sum(p.stat().st_size for p in raw.rglob("*.gz"))
    ingest = ingest_pair(raw, runs)
    base_lake = fresh_copy(DATA / "lake-project", DATA / "lake-base")
    print(f"2. peak memory, {args.big_events:,} events", flush=True)
    big = ingest_pair(dataset(args.big_events, args.days, args.orgs), runs)
    print("3. one organization-day export", flush=True)
    export, export_partition_info = export_pair(base_lake, runs)
    print("4. export as the lake grows, 7 vs 90 days", flush=True)
    growth = growth_pair(base_lake, runs)
    print(f"5. {args.batch_events:,}-event batch through Airflow", flush=True)
    batch = airflow_batch(runs, args.batch_events)
    print("6. DAG parse time", flush=True)
    parse = dag_parse_times(runs)

    results["figures"] = {
        "ingest": {k: v.as_dict() for k, v in ingest.items()},
        "ingest_ratio_project_over_duckdb": ingest["project_s"].median / ingest["duckdb_s"].median,
        "ingest_big": {k: v.as_dict() for k, v in big.items()},
        "memory_ratio_big_over_base": big["project_mib"].median / ingest["project_mib"].median,
        "export": {k: v.as_dict() for k, v in export.items()} | {"partition": export_partition_info},
        "export_ratio_project_over_duckdb": export["project_s"].median / export["duckdb_s"].median,
        "export_growth": {k: v.as_dict() for k, v in growth.items()},
        "export_ratio_90d_over_7d": growth["90d_s"].median / growth["7d_s"].median,
        "airflow_batch_s": batch.as_dict(),
        "dag_parse_s": {k: v.as_dict() for k, v in parse.items()},
    }
    print_table(results, ingest, big, export, growth, batch, parse, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(REPO)}")


def fresh_copy(source: Path, target: Path) -> Path:
    """Keep the last project lake for the export measurements (ingest runs reuse their own folder)."""
    fresh(target)
    shutil.copytree(source, target, copy_function=os.link)
    return target


def print_table(results: dict, ingest, big, export, growth, batch, parse, args) -> None:
    f = results["figures"]
    rows = [
        ("1 ingest project s", str(ingest["project_s"]), ""),
        ("1 ingest duckdb s", str(ingest["duckdb_s"]), f"ratio {f['ingest_ratio_project_over_duckdb']:.2f} (<= 1.25)"),
        (f"2 peak MiB at {args.events:,}", str(ingest["project_mib"]), "<= 1024"),
        (f"2 peak MiB at {args.big_events:,}", str(big["project_mib"]),
         f"ratio {f['memory_ratio_big_over_base']:.2f} (<= 1.5)"),
        ("  duckdb peak MiB", f"{ingest['duckdb_mib']} / {big['duckdb_mib']}", ""),
        (f"3 export {f['export']['partition']['rows']:,} rows, project s", str(export["project_s"]), ""),
        ("3 export duckdb s", str(export["duckdb_s"]), f"ratio {f['export_ratio_project_over_duckdb']:.2f} (<= 1.2)"),
        ("4 export, 7-day lake s", str(growth["7d_s"]), ""),
        ("4 export, 90-day lake s", str(growth["90d_s"]), f"ratio {f['export_ratio_90d_over_7d']:.2f} (<= 1.2)"),
        (f"5 {args.batch_events:,}-event batch via airflow s", str(batch), "< 60"),
        *((f"6 parse {k} s", str(v), "< 0.5") for k, v in parse.items()),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measurement'.ljust(width)}  {'median  (min-max)':>24}  target")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value:>24}  {target}")


if __name__ == "__main__":
    main()
