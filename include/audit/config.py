"""Where the roots are: flags win, then the AUDIT_* environment variables, then ./data defaults.

A root a command reads must exist: a typo in a flag or a variable is a one-line error (exit 2),
never an empty result or a new folder. Roots the pipeline creates may be missing: the lake before
the first ingest, the raw root before generate, the export root before the first export (status
and retain then report nothing archived; an S3 prefix exists only once it holds an object).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_BATCH_MB = 64
"""Decompressed raw megabytes per ingest batch: what bounds an ingest's memory (``--batch-mb``)."""

RETENTION_DAYS = 90
"""How many days the lake keeps events (older partitions are dropped once archived)."""

DEFAULTS = {
    "AUDIT_RAW_ROOT": "./data/raw",
    "AUDIT_LAKE_ROOT": "./data/lake",
    "AUDIT_EXPORT_ROOT": "./data/exports",
}


def root(variable: str, override: str | None = None) -> str:
    """The root named by ``variable`` (e.g. ``AUDIT_LAKE_ROOT``), unless ``override`` is given.

    An empty variable counts as unset; an empty flag is a typo (BadInput), never the default.
    """
    if override is not None and not override.strip():
        from .inputs import BadInput

        raise BadInput(f"{flag_of(variable)} is empty: name a folder or an s3:// URL")
    url = override or os.environ.get(variable) or DEFAULTS[variable]
    _check_remote(url, variable, override)
    return url


def _check_remote(url: str, variable: str, override: str | None) -> None:
    """A remote root must name a bucket (``s3://`` alone would list all of S3, or fail deep in
    delta-rs), and the lake's Delta tables live on local disk or S3 only (delta-rs's own clients).
    Text only: DAG files resolve roots while they parse."""
    from .inputs import BadInput
    from .storage import LOCAL_PROTOCOLS, S3_PROTOCOLS, protocol_of

    protocol = protocol_of(url)
    if protocol in LOCAL_PROTOCOLS:
        return
    if not url.split("://", 1)[1].strip("/"):
        raise BadInput(f"{_source(variable, override)}: {url} names no bucket: use {protocol}://bucket[/prefix]")
    if variable == "AUDIT_LAKE_ROOT" and protocol not in S3_PROTOCOLS:
        raise BadInput(
            f"{_source(variable, override)}: {url}: the lake's Delta tables need a local path or an s3:// root"
        )


def flag_of(variable: str) -> str:
    """The command-line flag that overrides ``variable``: AUDIT_LAKE_ROOT -> --lake-root."""
    return "--" + variable.removeprefix("AUDIT_").lower().replace("_", "-")


def _source(variable: str, override: str | None) -> str:
    """Where a root's value came from, for an error message."""
    return flag_of(variable) if override else f"${variable}" if os.environ.get(variable) else "the default"


def creatable_root(variable: str, override: str | None = None) -> str:
    """:func:`root`, for a command that creates it when missing; a local file there, or a scheme fsspec
    cannot open, is a BadInput."""
    from .inputs import BadInput
    from .storage import local_path_of, protocol_of

    url = root(variable, override)
    if (path := local_path_of(url)) is not None:
        if os.path.isfile(path):
            raise BadInput(f"{_source(variable, override)}: {url} is a file, not a folder")
        return url
    import fsspec

    if (protocol := protocol_of(url)) not in fsspec.available_protocols():  # what fsspec can open, none imported
        raise BadInput(f"{_source(variable, override)}: {url} uses the unknown scheme {protocol}://")
    return url


def existing_root(variable: str, override: str | None = None) -> str:
    """:func:`creatable_root`, which must exist (a local folder, or an s3:// bucket and prefix with objects).

    Raises BadInput naming where the value came from, before anything is read or written.
    """
    from .connections import open_root
    from .inputs import BadInput

    url = creatable_root(variable, override)
    opened = open_root(url)
    if not opened.exists(opened.path):
        raise BadInput(f"{_source(variable, override)}: {url} does not exist")
    return url


@dataclass(frozen=True)
class Roots:
    raw: str
    lake: str
    exports: str

    @classmethod
    def from_env(cls) -> Roots:
        return cls(root("AUDIT_RAW_ROOT"), root("AUDIT_LAKE_ROOT"), root("AUDIT_EXPORT_ROOT"))
