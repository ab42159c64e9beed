"""Airflow plugin: the Audit Logs page and API, mounted at /audit-logs with an entry in the navigation.

The entry is named "Platform Audit Logs": Airflow's Browse menu has its own "Audit Log" (Airflow's
own actions), and the two must not be confused.

Registration only; the app lives in include/audit/api.py (the repository root is on PYTHONPATH).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from include.audit.api import create_app

URL_PREFIX = "/audit-logs"
NAV_NAME = "Platform Audit Logs"


class AuditLogsPlugin(AirflowPlugin):
    """Serves the Audit Logs API and page from the api-server, and links the page from the UI."""

    name = "audit_logs"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Audit Logs API"}]
    external_views = [
        {
            "name": NAV_NAME,
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "audit-logs",
        }
    ]
