"""Object-storage credentials inside Airflow: an Airflow connection becomes the S3 storage options.

Outside Airflow nothing here is used: botocore reads AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_REGION itself. Inside, the connection named by $AUDIT_S3_CONN_ID
(default ``audit_s3``; e.g. ``AIRFLOW_CONN_AUDIT_S3`` as JSON with ``extra.endpoint_url``) wins;
Airflow is imported only in a process that already runs it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from . import storage

DEFAULT_CONN_ID = "audit_s3"
CONN_ID_VARIABLE = "AUDIT_S3_CONN_ID"

F = TypeVar("F", bound=Callable[..., Any])


def conn_id() -> str:
    """The Airflow connection holding the object-store credentials."""
    return os.environ.get(CONN_ID_VARIABLE) or DEFAULT_CONN_ID


def s3_options(login: str | None, password: str | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    """s3fs storage options from a connection's login (access key), password (secret) and extra."""
    options: dict[str, Any] = {}
    if login:
        options["key"] = login
    if password:
        options["secret"] = password
    if extra.get("aws_session_token"):
        options["token"] = extra["aws_session_token"]
    client = {k: extra[k] for k in ("endpoint_url", "region_name") if extra.get(k)}
    if client:
        options["client_kwargs"] = client
    return options


def secrets_of(options: Mapping[str, Any]) -> list[str]:
    """The values among ``options`` that must never be printed."""
    return [str(options[k]) for k in ("key", "secret", "token") if options.get(k)]


def airflow_connection_options(name: str) -> dict[str, Any] | None:
    """Storage options from Airflow connection ``name``; None when not inside Airflow or not defined."""
    if "airflow" not in sys.modules:
        return None
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(name)
    except AirflowNotFoundException:
        return None
    return s3_options(conn.login, conn.password, conn.extra_dejson)


@contextlib.contextmanager
def airflow_storage() -> Iterator[None]:
    """Within the block, s3:// roots use the Airflow connection's credentials (if there is one)."""
    options = airflow_connection_options(conn_id())
    if options is None:
        yield
        return
    with storage.use_options("s3", options, secrets_of(options)):
        yield


def uses_airflow_storage(func: F) -> F:
    """Decorate a task function so its roots reach object storage with the Airflow connection."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with airflow_storage():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def open_root(url: str) -> storage.Root:
    """``url`` as a root, with the Airflow connection's credentials for s3:// inside Airflow.

    For long-lived servers (the Audit Logs API): unlike :func:`airflow_storage` it changes no
    process-wide state, so concurrent requests cannot see each other's options.
    """
    options = airflow_connection_options(conn_id()) if url.startswith("s3://") else None
    if not options:
        return storage.Root.open(url)
    storage.add_secrets(secrets_of(options))
    return storage.Root.open(url, **options)
