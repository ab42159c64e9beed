"""Alerts to a webhook: task failures and missed deadlines, as one JSON ``{"text": ...}`` message each.

The webhook comes from an Airflow connection (``audit_alerts`` unless $AUDIT_ALERTS_CONN_ID names
another), so Slack, Teams, PagerDuty or any HTTP endpoint accepting plain JSON works. Without a
connection the alert is logged as a warning; a notifier problem never fails a task.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from airflow.sdk import BaseNotifier

from .storage import redact

DEFAULT_CONN_ID = "audit_alerts"
CONN_ID_VARIABLE = "AUDIT_ALERTS_CONN_ID"
TIMEOUT_SECONDS = 10.0
MAX_ERROR_CHARS = 300

log = logging.getLogger(__name__)


def conn_id() -> str:
    """The Airflow connection holding the webhook."""
    return os.environ.get(CONN_ID_VARIABLE) or DEFAULT_CONN_ID


def webhook_url(
    conn_type: str | None, host: str | None, schema: str | None, port: int | None, extra: Mapping[str, Any]
) -> str | None:
    """The URL a connection names: a full URL as host, or scheme/host/port plus ``extra.endpoint``.

    ``http://h:p/path`` as a connection URI puts ``path`` in ``schema``; an ``http``/``https``
    schema is the scheme (as in the HTTP provider's form).
    """
    if not host:
        return None
    if "://" in host:
        base, path = host, ""
    else:
        schemes = ("http", "https")
        scheme = schema if schema in schemes else conn_type if conn_type in schemes else "https"
        base = f"{scheme}://{host}" + (f":{port}" if port else "")
        path = "" if schema in schemes else (schema or "")
    endpoint = "/".join(p.strip("/") for p in (path, str(extra.get("endpoint") or "")) if p.strip("/"))
    return f"{base.rstrip('/')}/{endpoint}" if endpoint else base


def one_line(error: object) -> str:
    """An error as one short line without secrets."""
    text = redact(f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error))
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first if len(first) <= MAX_ERROR_CHARS else first[: MAX_ERROR_CHARS - 1] + "…"


def _get(obj: Any, name: str) -> Any:
    """``name`` of an Airflow object or of its JSON form (deadline callbacks receive dicts)."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The Airflow UI page of a DAG run."""
    return f"{base_url.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def failure_message(context: Mapping[str, Any]) -> str:
    """A task failure: the DAG, the run, the task and its error (one line), and the log's UI URL."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = _get(ti, "dag_id") or _get(context.get("dag"), "dag_id") or "?"
    run_id = _get(ti, "run_id") or _get(context.get("dag_run"), "run_id") or "?"
    task = _get(ti, "task_id") or "?"
    map_index = _get(ti, "map_index")
    if isinstance(map_index, int) and map_index >= 0:
        task = f"{task}[{map_index}]"
    error = context.get("exception") or context.get("reason") or "no error recorded"
    log_url = _get(ti, "log_url") or "(no task log)"
    return f"[audit] {dag_id} failed: task {task} of run {run_id}: {one_line(error)}. Log: {log_url}"


def deadline_message(context: Mapping[str, Any], what: str, base_url: str) -> str:
    """A missed deadline: the DAG, the run, what was due by when, and the run's UI URL (its task logs)."""
    run = context.get("dag_run") or {}
    dag_id, run_id = str(_get(run, "dag_id") or "?"), str(_get(run, "dag_run_id") or _get(run, "run_id") or "?")
    due = _get(context.get("deadline") or {}, "deadline_time")
    due_text = due.isoformat() if hasattr(due, "isoformat") else str(due or "?")
    return (
        f"[audit] {dag_id} missed its deadline: {what} (due {due_text}, run {run_id}, "
        f"state {_get(run, 'state') or '?'}). Logs: {run_url(base_url, dag_id, run_id)}"
    )


def ui_base_url() -> str:
    """Where the Airflow UI is ([api] base_url)."""
    from airflow.sdk.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080/")


def find_webhook(name: str) -> str | None:
    """The webhook URL of Airflow connection ``name``; None when it is not defined."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(name)
    except AirflowNotFoundException:
        return None
    return webhook_url(conn.conn_type, conn.host, conn.schema, conn.port, conn.extra_dejson)


def post(url: str, text: str, timeout: float = TIMEOUT_SECONDS) -> None:
    """POST ``{"text": text}`` to ``url``; raises on a transport error or a non-2xx answer."""
    httpx.post(url, json={"text": text}, timeout=timeout).raise_for_status()


class WebhookNotifier(BaseNotifier):
    """Post a task failure or a missed deadline to the alerts webhook (``on_failure_callback``, ``DeadlineAlert``).

    ``deadline`` describes what was due (set for deadline alerts, whose context has a ``deadline``).
    A backfill run of a past date misses its deadline the moment it is created: it does not page.
    """

    def __init__(self, deadline: str | None = None, conn_id: str | None = None):
        super().__init__()
        self.deadline = deadline
        self.conn_id = conn_id

    def notify(self, context: Any) -> None:
        try:
            if self.deadline or "deadline" in context:
                if _get(context.get("dag_run") or {}, "run_type") == "backfill":
                    log.info("Backfill runs are late by design; no deadline alert: %s", self.deadline)
                    return
                text = deadline_message(context, self.deadline or "deadline", ui_base_url())
            else:
                text = failure_message(context)
            name = self.conn_id or conn_id()
            url = find_webhook(name)
            if url is None:
                log.warning("No alerts connection %r configured; alert not sent: %s", name, text)
                return
            post(url, text)
            log.info("Alert sent to connection %r", name)
        except Exception as exc:
            log.warning("Could not send the alert: %s", one_line(exc))
