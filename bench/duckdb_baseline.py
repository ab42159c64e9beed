"""The DuckDB baselines the benchmark compares against: what a bare SQL script would do.

    python bench/duckdb_baseline.py ingest RAW_ROOT OUT_DIR
    python bench/duckdb_baseline.py export OUT_CSV PARQUET_FILE [PARQUET_FILE ...]

``ingest`` is issue 8's bare partitioned conversion, word for word (its glob, ``*.jsonl``, names
the gzip files instead where RAW_ROOT holds those): no validation, no dedupe, no quarantine. ``export`` reads one organization-day's
live Parquet files (the Delta table's, listed by the caller; the organization comes from
the partition path, as Delta keeps partition values out of the data files) and writes them as CSV in the
export's column order, sorted by time then event_id.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb


def ingest(raw_root: str, out_dir: str) -> None:
    suffix = "jsonl.gz" if next(Path(raw_root).rglob("*.jsonl.gz"), None) else "jsonl"
    duckdb.sql(f"""
        COPY (SELECT *, CAST(CAST(event_time AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS DATE) AS event_date
              FROM read_json('{raw_root}/**/*.{suffix}', format='newline_delimited'))
        TO '{out_dir}' (FORMAT parquet, PARTITION_BY (event_date, organization_id))
    """)


def export(out_csv: str, *parquet_files: str) -> None:
    duckdb.sql(f"""
        COPY (
            SELECT strftime(timezone('UTC', event_time), '%Y-%m-%dT%H:%M:%S.%fZ') AS time, organization_id,
                   user_email AS user, action, action_type, resource, ip_address, user_agent, region, event_id
            FROM read_parquet({list(parquet_files)!r}, hive_partitioning = true)
            ORDER BY event_time, event_id
        ) TO '{out_csv}' (HEADER, DELIMITER ',')
    """)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"ingest": ingest, "export": export}[command](*args)
