"""Airflow plugin: the Audit Logs page and API, mounted at /audit-logs with an entry in the navigation.

Registration only; the app lives in include/audit/api.py (the repository root is on PYTHONPATH).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from include.audit.api import create_app

URL_PREFIX = "/audit-logs"


class AuditLogsPlugin(AirflowPlugin):
    """Serves the Audit Logs API and page from the api-server, and links the page from the UI."""

    name = "audit_logs"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Audit Logs API"}]
    external_views = [{
        "name": "Audit Logs",
        "href": f"{URL_PREFIX}/",
        "destination": "nav",
        "category": "browse",
        "url_route": "audit-logs",
    }]
