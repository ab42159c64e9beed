"""Where the roots are: flags win, then the AUDIT_* environment variables, then ./data defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass

RETENTION_DAYS = 90
"""How many days the lake keeps events (older partitions are dropped once archived)."""

DEFAULTS = {
    "AUDIT_RAW_ROOT": "./data/raw",
    "AUDIT_LAKE_ROOT": "./data/lake",
    "AUDIT_EXPORT_ROOT": "./data/exports",
}


def root(variable: str, override: str | None = None) -> str:
    """The root named by ``variable`` (e.g. ``AUDIT_LAKE_ROOT``), unless ``override`` is given."""
    return override or os.environ.get(variable) or DEFAULTS[variable]


@dataclass(frozen=True)
class Roots:
    raw: str
    lake: str
    exports: str

    @classmethod
    def from_env(cls) -> "Roots":
        return cls(root("AUDIT_RAW_ROOT"), root("AUDIT_LAKE_ROOT"), root("AUDIT_EXPORT_ROOT"))
