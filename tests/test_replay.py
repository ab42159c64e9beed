"""Quarantine replay: lines that pass today's rules enter the lake once; the rest keep (or change) their reason."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import MappingProxyType

import polars as pl
import pytest

from include.audit import catalog, events, quarantine
from include.audit.cli import main
from include.audit.ingest import ingest
from include.audit.replay import replay
from include.audit.storage import Root

from .helpers import event, iso, write_lines


def _records(lake: str) -> pl.DataFrame:
    return quarantine.read_all(Root.open(lake)).sort("source_file", "line_number")


def _lake(lake: str) -> pl.DataFrame:
    return pl.read_delta(f"{lake}/events")


def test_future_and_unknown_action_lines_replay_once_when_they_pass(roots, now, monkeypatch):
    early = now + timedelta(minutes=20)  # a producer clock 20 minutes ahead
    write_lines(
        Path(roots["raw"]) / "a.jsonl",
        [
            event(event_id="ok", event_time=iso(now - timedelta(hours=1))),
            event(event_id="ahead", event_time=iso(early)),
            event(event_id="new-action", action="ShareNotebook", event_time=iso(now - timedelta(hours=2))),
            event(event_id="old", event_time=iso(now - timedelta(days=120))),
            "{broken",
        ],
    )
    first = ingest(roots["raw"], roots["lake"], now=now)
    assert first.quarantined == {
        "malformed_json": 1,
        "unknown_action": 1,
        "outside_retention": 1,
        "future_timestamp": 1,
    }

    # too early: the future line still fails and is marked; nothing enters the lake
    too_soon = replay(roots["lake"], reasons=["future_timestamp"], now=now)
    assert (too_soon["records"], too_soon["ingested"]) == (1, 0)
    assert too_soon["still_quarantined"] == {"future_timestamp": 1}
    assert _records(roots["lake"]).filter(reason="future_timestamp")["replay_outcome"].to_list() == ["quarantined"]

    # after the catalog learns the action, the unknown_action line passes, once
    monkeypatch.setattr(events, "ACTIONS", MappingProxyType({**catalog.ACTIONS, "ShareNotebook": "Job Run"}))
    later = now + timedelta(hours=1)
    dry = replay(roots["lake"], now=later, dry_run=True)
    assert dry["would_pass"] == 2 and _records(roots["lake"])["replayed_at"].null_count() == 3
    done = replay(roots["lake"], now=later)
    # the new action, and the future line whose time has come; malformed_json fails again
    assert done["records"] == 3 and done["ingested"] == 2 and done["still_quarantined"] == {"malformed_json": 1}
    again = replay(roots["lake"], now=later)  # a second replay ingests nothing, doubles nothing
    assert (again["records"], again["ingested"], again["duplicates"]) == (1, 0, 0)
    lake = _lake(roots["lake"])
    assert sorted(lake["event_id"]) == ["ahead", "new-action", "ok"] and lake.height == lake["event_id"].n_unique()
    records = _records(roots["lake"])
    assert records.height == 4  # records stay, marked with what happened
    outcome = dict(records.select("reason", "replay_outcome").iter_rows())
    assert outcome == {
        "malformed_json": "quarantined",
        "unknown_action": "ingested",
        "future_timestamp": "ingested",
        "outside_retention": None,
    }


def test_a_future_line_replayed_after_its_time_has_come_enters_the_lake(roots, now):
    write_lines(Path(roots["raw"]) / "a.jsonl", [event(event_id="ahead", event_time=iso(now + timedelta(minutes=20)))])
    ingest(roots["raw"], roots["lake"], now=now)
    result = replay(roots["lake"], reasons=["future_timestamp"], now=now + timedelta(minutes=30))
    assert result["ingested"] == 1 and _lake(roots["lake"])["event_id"].to_list() == ["ahead"]
    assert _records(roots["lake"])["replay_outcome"].to_list() == ["ingested"]


def test_a_replayed_line_whose_event_is_already_in_the_lake_is_a_duplicate(roots, now):
    raw = Path(roots["raw"])
    write_lines(raw / "a.jsonl", [event(event_id="e1", event_time=iso(now + timedelta(minutes=20)))])
    ingest(roots["raw"], roots["lake"], now=now)
    write_lines(raw / "b.jsonl", [event(event_id="e1", event_time=iso(now + timedelta(minutes=20)))])
    ingest(roots["raw"], roots["lake"], now=now + timedelta(hours=1))  # the producer re-sent it, now valid
    result = replay(roots["lake"], now=now + timedelta(hours=1))
    assert (result["ingested"], result["duplicates"]) == (0, 1)
    assert _lake(roots["lake"]).height == 1
    assert _records(roots["lake"])["replay_outcome"].to_list() == ["duplicate"]


def test_outside_retention_never_replays_and_bad_reasons_exit_2(roots, now, capsys):
    write_lines(Path(roots["raw"]) / "a.jsonl", [event(event_id="old", event_time=iso(now - timedelta(days=120)))])
    ingest(roots["raw"], roots["lake"], now=now)
    assert replay(roots["lake"], now=now)["records"] == 0
    for bad in (["--reason", "outside_retention"], ["--reason", "nonsense"], ["--since", "2026-13-01"]):
        assert main(["replay", "--lake-root", roots["lake"], *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.s3
def test_replay_on_s3(s3_prefix, now):
    raw, lake = f"{s3_prefix}/raw", f"{s3_prefix}/lake"
    from include.audit.generate import generate

    generate(raw, events=50, days=1, organizations=1, now=now)
    Root.open(raw).write_bytes(
        Root.open(raw).join("late.jsonl"),
        (__import__("json").dumps(event(event_id="x", event_time=iso(now + timedelta(minutes=20)))) + "\n").encode(),
    )
    ingest(raw, lake, now=now)
    result = replay(lake, reasons=["future_timestamp"], now=now + timedelta(hours=1))
    assert result["ingested"] == 1 and replay(lake, now=now + timedelta(hours=1))["records"] == 0
