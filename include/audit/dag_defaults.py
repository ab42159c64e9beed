"""Task defaults shared by the DAGs: one retry policy, exponential backoff, one owner."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def retrying(retries: int, first_delay: timedelta, max_delay: timedelta) -> dict[str, Any]:
    """Airflow ``default_args``: retry ``retries`` times, doubling the wait from ``first_delay`` up to ``max_delay``."""
    return {
        "owner": "audit",
        "retries": retries,
        "retry_delay": first_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": max_delay,
    }
