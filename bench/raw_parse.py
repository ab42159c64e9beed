"""The raw parser alone: throughput and peak memory of ``read_chunks`` over one big JSON Lines file.

Generates ``--events`` events (plain JSON Lines, cached under bench/data), joins them into one file
(4M events are about 1.4 GB), then parses it ``--runs`` times, each in a fresh process under GNU time,
and prints the medians (wall seconds, MB/s, events/s, peak RSS). Issue 8's target: a 1.4 GB file with
16 MiB chunks stays far under 1 GiB.

    python bench/raw_parse.py [--events 4000000] [--chunk-mb 16] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "bench" / "data"
NOW = "2026-11-26T12:00:00Z"


def big_file(events: int) -> Path:
    """One JSON Lines file holding ``events`` generated events (and the generator's bad lines)."""
    target = DATA / f"raw-one-file-{events}" / "all.jsonl"
    if target.exists():
        return target
    parts = DATA / f"raw-plain-{events}"
    if not parts.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "include.audit",
                "generate",
                "--raw-root",
                str(parts),
                "--events",
                str(events),
                "--days",
                "3",
                "--orgs",
                "200",
                "--no-gzip",
                "--now",
                NOW,
                "--seed",
                "8",
            ],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with open(partial, "wb") as out:
        for path in sorted(parts.rglob("*.jsonl")):
            with open(path, "rb") as f:
                shutil.copyfileobj(f, out, 16 << 20)
    partial.rename(target)
    shutil.rmtree(parts)
    return target


def measure(path: Path, chunk_bytes: int) -> None:
    """Parse ``path`` (in this process) and print what it found and how long it took."""
    sys.path.insert(0, str(REPO))
    from include.audit.raw import discover, read_chunks
    from include.audit.storage import Root

    root = Root.open(str(path.parent))
    (file,) = [f for f in discover(root).files if f.path == path.name]
    start = time.perf_counter()
    rows = rejected = blank = chunks = 0
    for chunk in read_chunks(root, file, chunk_bytes=chunk_bytes):
        rows, rejected, blank, chunks = (
            rows + chunk.rows.height,
            rejected + chunk.rejected.height,
            blank + chunk.blank_lines,
            chunks + 1,
        )
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "rows": rows,
                "rejected": rejected,
                "blank": blank,
                "chunks": chunks,
                "bytes": file.size,
            }
        )
    )


def run_once(path: Path, chunk_bytes: int) -> dict:
    report = path.parent / ".time"
    start = time.perf_counter()
    done = subprocess.run(
        [
            "/usr/bin/time",
            "-f",
            "%M",
            "-o",
            str(report),
            sys.executable,
            __file__,
            "--measure",
            str(path),
            "--chunk-bytes",
            str(chunk_bytes),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(wall=time.perf_counter() - start, peak_mib=int(report.read_text().split()[-1]) / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=4_000_000)
    parser.add_argument("--chunk-mb", type=float, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.chunk_bytes)
        return
    path = big_file(args.events)
    chunk_bytes = int(args.chunk_mb * (1 << 20))
    runs = [run_once(path, chunk_bytes) for _ in range(max(1, args.runs))]
    seconds = statistics.median(r["seconds"] for r in runs)
    size = runs[0]["bytes"]
    summary = {
        "file_bytes": size,
        "rows": runs[0]["rows"],
        "rejected": runs[0]["rejected"],
        "chunk_bytes": chunk_bytes,
        "parse_seconds_median": round(seconds, 2),
        "parse_seconds": [round(r["seconds"], 2) for r in runs],
        "mb_per_second": round(size / seconds / 1e6, 1),
        "events_per_second": round((runs[0]["rows"] + runs[0]["rejected"]) / seconds),
        "peak_rss_mib_median": round(statistics.median(r["peak_mib"] for r in runs)),
        "peak_rss_mib": [round(r["peak_mib"]) for r in runs],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
