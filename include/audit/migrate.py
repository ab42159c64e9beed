"""Converting a lake written before the Delta tables (plain hive-partitioned Parquet) in place.

The Parquet files stay where they are: ``convert_to_deltalake`` writes a first commit that
references them. The old ledger (``_state/ingested/*.json``) becomes the new ledger snapshot, so no
raw file is ingested twice; the old lease and lock files are removed. Running it again on a
converted lake changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from . import lake as lk
from . import ledger as ledgers
from . import quarantine
from .storage import Root

log = logging.getLogger(__name__)

OLD_LEDGER = "ingested"
OLD_STATE_FILES = ("ingest.lease", "ingest.lock")


def _convert(lake: Root, table: lk.Table, name: str, partitions: dict[str, str]) -> str:
    """Make the Parquet files under ``name`` a Delta table (again after a request lost on the way)."""
    return lk.again_if_lost(table.uri, lambda: _convert_once(lake, table, name, partitions))


def _convert_once(lake: Root, table: lk.Table, name: str, partitions: dict[str, str]) -> str:
    from deltalake import Field, Schema, convert_to_deltalake

    if table.open() is not None:
        return "already a Delta table"
    if not lake.find(lake.join(name), (".parquet",)):
        return "absent"
    convert_to_deltalake(
        table.uri,
        partition_by=Schema([Field(c, t) for c, t in partitions.items()]),
        partition_strategy="hive",
        storage_options=table.storage_options,
    )
    return "converted"


def _add_replay_columns(table: lk.Table) -> list[str]:
    """Add the quarantine columns replay writes to a table made before them; those it added."""
    q = table.open()
    if q is None:
        return []
    missing = [c for c in ("replayed_at", "replay_outcome") if c not in q.schema().to_arrow().names]
    if missing:
        from deltalake import Field

        q.alter.add_columns([Field(c, "timestamp" if c == "replayed_at" else "string", nullable=True) for c in missing])
    return missing


def migrate(lake_url: str) -> dict[str, Any]:
    """Turn an old Parquet lake into Delta tables; idempotent."""
    lake = Root.open(lake_url)
    done: dict[str, Any] = {
        "events": _convert(lake, lk.events_table(lake), lk.EVENTS, {"event_date": "date", "organization_id": "string"}),
        "quarantine": _convert(lake, quarantine.table(lake), lk.QUARANTINE, {"ingest_date": "date"}),
    }
    configured = {
        "events": lk.events_table(lake).configure(lk.STATS_COLUMNS),
        "quarantine": quarantine.table(lake).configure(),
    }
    if any(configured.values()):
        done["properties_set"] = {name: keys for name, keys in configured.items() if keys}
    records = quarantine.table(lake)
    added = lk.again_if_lost(records.uri, lambda: _add_replay_columns(records))
    if added:
        done["quarantine_columns_added"] = added
    old_ledger = lake.join(lk.STATE, OLD_LEDGER)
    entries = lake.find(old_ledger, (".json",))
    if entries:
        table = quarantine.open_table(lake)
        ledger = ledgers.load(lake, table)
        for path in entries:
            record = lk.read_json(lake, path)
            ledger.record(
                ledger.version,
                str(record.get("batch_id", "")),
                {p: [sig, 0, True] for p, sig in record.get("files", {}).items()},
            )
        ledgers.save(lake, ledger)
        lake.remove(old_ledger, recursive=True)
        done["ledger_entries"] = len(entries)
    for name in OLD_STATE_FILES:
        path = lake.join(lk.STATE, name)
        if lake.exists(path):
            lake.remove(path)
    return done
