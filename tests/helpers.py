"""Small builders shared by tests: raw events and lines, written where a test wants them."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any


def event(**overrides: Any) -> dict[str, Any]:
    """A valid raw event; override any field (None removes nothing: it sets JSON null)."""
    base = {
        "event_id": "evt-1",
        "event_time": "2026-11-25T10:00:00Z",
        "organization_id": "acme",
        "user_email": "alice@acme.com",
        "action": "CreateJobRun",
        "resource": "job-run/1",
        "ip_address": "203.0.113.7",
        "user_agent": "curl/8.0",
        "region": "aws-us-west-2",
    }
    base.update(overrides)
    return base


def write_lines(path: Path, lines: list[str | dict], newline: str = "\n") -> Path:
    """Write JSON Lines (dicts are encoded, strings written as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = newline.join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + newline
    path.write_bytes(text.encode())
    return path


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")
