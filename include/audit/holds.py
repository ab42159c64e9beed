"""Legal holds: while an organization is held, retention drops none of its partitions, not even forced.

A hold and its release are entries of the organization's chain (``kind: "hold"`` / ``"release"``,
with the reason and who), so the archive itself records when data was protected and by whom.
The latest of them decides; a hold with ``until`` ends after that UTC date.
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, date, datetime
from typing import Any

from . import archive as ar
from .inputs import BadInput, validate_organization_id
from .storage import Root


def who() -> str:
    """The person acting: the Airflow user of a task run ($AIRFLOW_CTX_DAG_OWNER), else the OS user."""
    return os.environ.get("AUDIT_ACTOR") or os.environ.get("AIRFLOW_CTX_DAG_OWNER") or getpass.getuser()


def hold_entries(exports: Root, organization_id: str) -> list[dict[str, Any]]:
    """The organization's hold and release entries, in chain order."""
    paths = ar.list_org(exports, organization_id, exports.join(organization_id, ar.HOLDS))
    entries = [ar.read_entry(exports, p) for p in paths if p.endswith(".json")]
    return sorted(entries, key=lambda e: e.get("sequence", 0))


def is_active(entry: dict[str, Any] | None, today: date) -> bool:
    """A hold entry still in force on ``today`` (no ``until``, or ``until`` not yet past)."""
    if not entry or entry.get("kind") != "hold":
        return False
    return not entry.get("until") or date.fromisoformat(entry["until"]) >= today


def active_hold(exports: Root, organization_id: str, today: date) -> dict[str, Any] | None:
    """The hold in force for the organization on ``today``, or None."""
    entries = hold_entries(exports, organization_id)
    latest = entries[-1] if entries else None
    return latest if is_active(latest, today) else None


def _today(now: datetime | None = None) -> date:
    """The UTC date of ``now`` (default: the current time)."""
    return (now or datetime.now(UTC)).astimezone(UTC).date()


def place(
    export_url: str, organization_id: str, reason: str, until: date | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Record a legal hold on the organization (a new entry in its chain).

    The latest entry decides, so a new hold may extend one in force but never end it sooner: a
    hold is shortened only by releasing it first. An ``until`` already past is refused.
    """
    validate_organization_id(organization_id)
    if not reason.strip():
        raise BadInput("--reason is required: say why the data is held")
    today = _today(now)
    if until is not None and until < today:
        raise BadInput(f"--until {until.isoformat()} is past: a hold ends after its --until date (UTC)")
    exports = Root.open(export_url)
    held = active_hold(exports, organization_id, today)
    if held is not None and until is not None and (not held.get("until") or until < date.fromisoformat(held["until"])):
        raise BadInput(
            f"{organization_id} is already held until {held.get('until') or 'released'}: a new hold may only "
            "extend it (release it first to shorten it)"
        )
    path = exports.join(organization_id, ar.HOLDS, f"{ar.unique_suffix(now)}_hold.json")
    return ar.append(
        exports,
        organization_id,
        path,
        {"kind": "hold", "reason": reason.strip(), "until": until.isoformat() if until else None, "by": who()},
        now,
    )


def release(export_url: str, organization_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Record the end of the organization's hold; BadInput when none is in force."""
    validate_organization_id(organization_id)
    exports = Root.open(export_url)
    held = active_hold(exports, organization_id, _today(now))
    if held is None:
        raise BadInput(f"{organization_id} has no legal hold in force")
    path = exports.join(organization_id, ar.HOLDS, f"{ar.unique_suffix(now)}_release.json")
    return ar.append(
        exports, organization_id, path, {"kind": "release", "reason": held.get("reason"), "by": who()}, now
    )


def list_holds(export_url: str, today: date | None = None) -> list[dict[str, Any]]:
    """Every hold in force, one per organization."""
    exports = Root.open(export_url)
    found = []
    for org in ar.organizations(exports):
        held = active_hold(exports, org, today or _today())
        if held:
            found.append({key: held.get(key) for key in ("organization_id", "reason", "until", "by", "created_at")})
    return found
