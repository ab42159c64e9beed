"""The DuckDB baselines the benchmark compares against: what a bare SQL script would do.

    python bench/duckdb_baseline.py ingest RAW_ROOT OUT_DIR
    python bench/duckdb_baseline.py export PARTITION_DIR OUT_CSV

``ingest`` only reads the raw files and writes the same partition layout (no validation,
no dedupe, no quarantine); ``export`` selects one organization-day and writes it as CSV.
"""

from __future__ import annotations

import sys

import duckdb

FIELDS = ["event_id", "event_time", "organization_id", "user_email", "action", "resource", "ip_address",
          "user_agent", "region"]


def ingest(raw_root: str, out_dir: str) -> None:
    columns = ", ".join(f"{f}: 'VARCHAR'" for f in FIELDS)
    con = duckdb.connect()
    con.sql("SET preserve_insertion_order = false")
    con.sql(f"""
        COPY (
            SELECT event_id, CAST(event_time AS TIMESTAMPTZ) AS event_time, user_email, action, resource,
                   ip_address, user_agent, region,
                   CAST(timezone('UTC', CAST(event_time AS TIMESTAMPTZ)) AS DATE) AS event_date, organization_id
            FROM read_json('{raw_root}/**/*.jsonl.gz', format = 'newline_delimited', ignore_errors = true,
                           columns = {{{columns}}})
            WHERE TRY_CAST(event_time AS TIMESTAMPTZ) IS NOT NULL AND organization_id IS NOT NULL
        ) TO '{out_dir}' (FORMAT parquet, PARTITION_BY (event_date, organization_id), COMPRESSION zstd)
    """)


def export(partition_dir: str, out_csv: str) -> None:
    con = duckdb.connect()
    con.sql(f"""
        COPY (
            SELECT strftime(timezone('UTC', event_time), '%Y-%m-%dT%H:%M:%S.%fZ') AS time, user_email AS user,
                   action, action_type, resource, ip_address, user_agent, region, event_id
            FROM read_parquet('{partition_dir}/*.parquet')
            ORDER BY event_time, event_id
        ) TO '{out_csv}' (HEADER, DELIMITER ',')
    """)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"ingest": ingest, "export": export}[command](*args)
