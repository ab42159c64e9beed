"""`make demo`: a week of sample events through the real DAGs (airflow dags test, SQLite in ./.airflow).

Environment comes from the Makefile: AIRFLOW_HOME, the dags folder and the AUDIT_* roots.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from include.audit.config import Roots
from include.audit.generate import generate
from include.audit.status import lake_status
from include.audit.storage import Root

DAYS = 7


def airflow(*args: str) -> None:
    """Run an airflow CLI command; its (long) log goes to .airflow/demo.log."""
    log_path = os.path.join(os.environ["AIRFLOW_HOME"], "demo.log")
    os.makedirs(os.environ["AIRFLOW_HOME"], exist_ok=True)
    with open(log_path, "a") as log:
        # `airflow dags test` fails on DAGs with deadline alerts in Airflow 3.3.2: the demo runs them without
        done = subprocess.run(
            ["airflow", *args], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "AUDIT_DEADLINE_ALERTS": "off"}
        )
    if done.returncode:
        sys.exit(f"demo: `airflow {' '.join(args)}` failed (exit {done.returncode}); see {log_path}")


def main() -> None:
    roots = Roots.from_env()
    now = datetime.now(UTC)
    if not Root.open(roots.raw).find(Root.open(roots.raw).path):
        expected = generate(roots.raw, events=20_000, days=DAYS, organizations=12, now=now)
        print(
            f"generated {expected.valid_events} events (+{sum(expected.bad.values())} bad lines, "
            f"{expected.redeliveries} re-deliveries) in {expected.files} files under {roots.raw}"
        )
    print("airflow db migrate ...")
    airflow("db", "migrate")
    print("audit_ingest ...")
    airflow("dags", "test", "audit_ingest")
    for back in range(DAYS, 0, -1):
        logical = (now - timedelta(days=back - 1)).replace(hour=0, minute=30, second=0, microsecond=0)
        print(f"audit_daily_export for {(logical - timedelta(days=1)).date()} ...")
        airflow("dags", "test", "audit_daily_export", logical.isoformat())
    print("audit_retention ...")
    airflow("dags", "test", "audit_retention", now.replace(microsecond=0).isoformat())

    status = lake_status(roots.lake, roots.exports)
    print("\n== Summary ==")
    print(f"events in the lake: {status['events']}")
    for day, count in status["events_per_date"].items():
        print(f"  {day}: {count}")
    print("quarantined by reason: " + json.dumps(status["quarantined"]))
    archive = status["archive"]
    print(
        f"archive: {len(archive)} organizations, {sum(o['days_archived'] for o in archive.values())} days "
        "archived (verify it: python -m include.audit verify)"
    )
    for org, health in list(archive.items())[:10]:
        print(
            f"  {org}: {health['days_archived']} days, missing {len(health['missing_days'])}, "
            f"stale {len(health['stale_days'])}"
        )
    print(f"validation report (open in a browser): {status['validation_report']}")
    print("next: `make airflow` opens the UI on these DAGs (http://127.0.0.1:8080)")


if __name__ == "__main__":
    main()
