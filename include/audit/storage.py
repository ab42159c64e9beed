"""The I/O edge: roots are local paths or fsspec URLs (``s3://bucket/prefix``), reached through fsspec.

Writes are atomic for readers: a local file is written beside its target and renamed into
place; an object store's single PUT is all-or-nothing by itself. Nothing else in the library
touches a filesystem directly.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Iterable

import fsspec
from fsspec.implementations.local import LocalFileSystem


class StorageError(RuntimeError):
    """A storage operation failed; the message is one line and holds no secrets."""


@dataclass(frozen=True)
class Root:
    """A storage root: a filesystem and the base path inside it."""

    fs: fsspec.AbstractFileSystem
    path: str
    url: str

    @classmethod
    def open(cls, url: str, **storage_options: object) -> "Root":
        """Resolve ``url`` (a local path or any fsspec URL) to a root."""
        fs, path = fsspec.core.url_to_fs(str(url), **storage_options)
        if isinstance(fs, LocalFileSystem):
            path = os.path.abspath(path)
        return cls(fs=fs, path=path.rstrip("/") or "/", url=str(url))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def join(self, *parts: str) -> str:
        """Absolute path (inside this root's filesystem) of a relative location."""
        return posixpath.join(self.path, *parts)

    def relative(self, path: str) -> str:
        """``path`` relative to this root."""
        path = self.fs._strip_protocol(path)
        return posixpath.relpath(path, self.path)

    def display(self, path: str) -> str:
        """A path as a user would write it (URL for remote roots)."""
        return path if self.is_local else f"{self.fs.unstrip_protocol(path)}"

    # --- reads -------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def find(self, path: str, suffixes: tuple[str, ...] = ()) -> list[str]:
        """All files below ``path`` (recursively), sorted; only those ending in ``suffixes`` if given."""
        if not self.fs.exists(path):
            return []
        found = sorted(self.fs.find(path))
        return [p for p in found if not suffixes or p.endswith(suffixes)]

    def find_with_details(self, path: str) -> dict[str, dict]:
        """File path -> fsspec info (size, mtime or ETag) for every file below ``path``."""
        if not self.fs.exists(path):
            return {}
        return dict(sorted(self.fs.find(path, detail=True).items()))

    def listdir(self, path: str) -> list[str]:
        """Names of the directories directly below ``path`` (empty if it does not exist)."""
        if not self.fs.exists(path):
            return []
        entries = self.fs.ls(path, detail=True)
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")

    # --- writes ------------------------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` so that readers see either the whole new object or none of it."""
        if self.is_local:
            self.write_chunks(path, [data])
        else:
            self.fs.pipe_file(path, data)

    def write_chunks(self, path: str, chunks: Iterable[bytes]) -> int:
        """Stream ``chunks`` into ``path``, atomically for readers; returns the bytes written.

        Locally: a hidden temporary file beside the target, renamed into place. Object stores:
        a (multipart) upload, which only becomes an object when it completes.
        """
        size = 0
        if not self.is_local:
            f = self.fs.open(path, "wb")
            try:
                for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk)
            except BaseException:
                f.discard() if hasattr(f, "discard") else None  # abort: never publish a partial object
                raise
            f.close()
            return size
        directory = posixpath.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = posixpath.join(directory, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return size

    def remove(self, path: str, recursive: bool = False) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=recursive)
