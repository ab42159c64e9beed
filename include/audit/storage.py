"""The I/O edge: roots are local paths or fsspec URLs (``s3://bucket/prefix``), reached through fsspec.

Writes are atomic for readers: a local file is written beside its target and renamed into
place; an object store's single PUT is all-or-nothing by itself. Nothing else in the library
touches a filesystem directly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import fsspec


def is_hidden(path: str) -> bool:
    """A name starting with ``.`` or ``_``: a temporary file or a marker, never data (the hive convention)."""
    return posixpath.basename(path.rstrip("/")).startswith((".", "_"))


class StorageError(RuntimeError):
    """A storage operation failed; the message is one line and holds no secrets."""


S3_PROTOCOLS = ("s3", "s3a")
S3_CLIENT_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "max_attempts": 5},
    "connect_timeout": 5,
    "read_timeout": 30,
}
"""botocore settings for every S3 root: throttling (503 SlowDown), resets and timeouts are retried
with exponential backoff and jitter, a few times, so a dead endpoint fails in under a minute, not ten."""

SPOOL_BYTES = 16 << 20
"""A conditional create of a stream keeps this much in memory, the rest in a temporary file."""
PIECE_BYTES = 1 << 20
"""What a stream is read in, when a file is passed on without being held whole."""

_OPTIONS: dict[str, dict[str, Any]] = {}  # protocol -> storage options set for this process
_SECRETS: set[str] = set()  # credential values that must never be printed
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


LOCAL_PROTOCOLS = ("file", "local")


def protocol_of(url: str) -> str:
    """The fsspec protocol of a root URL (``file`` for plain paths)."""
    return str(url).split("://", 1)[0].lower() if "://" in str(url) else "file"


def local_path(url: str) -> str:
    """A local URL (``file://...``) or path as an absolute path, as fsspec's local filesystem names it."""
    url = str(url)
    if protocol_of(url) in LOCAL_PROTOCOLS and "://" in url:
        url = url.split("://", 1)[1]
    return os.path.abspath(os.path.expanduser(url))


def local_path_of(url: str) -> str | None:
    """The absolute local path ``url`` names, or None for a remote URL (``s3://...``)."""
    return local_path(url) if protocol_of(url) in LOCAL_PROTOCOLS else None


def merge_options(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, merging nested dicts (e.g. client_kwargs) one level deep."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def default_options(url: str) -> dict[str, Any]:
    """The storage options every root of ``url``'s protocol gets: retry policy for S3, plus options set
    by :func:`use_options` (e.g. credentials from an Airflow connection)."""
    protocol = protocol_of(url)
    base: dict[str, Any] = {}
    if protocol in S3_PROTOCOLS:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        # explicit, so that a changed endpoint gets its own client rather than fsspec's cached one
        base = {
            "config_kwargs": S3_CLIENT_CONFIG,
            **({"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}),
        }
    return merge_options(base, _OPTIONS.get(protocol, {}))


@contextlib.contextmanager
def use_options(protocol: str, options: dict[str, Any], secrets: Iterable[str] = ()) -> Iterator[None]:
    """Within the block, roots of ``protocol`` open with ``options``; ``secrets`` are redacted from output."""
    previous = _OPTIONS.get(protocol)
    _OPTIONS[protocol] = options
    add_secrets(secrets)
    try:
        yield
    finally:
        if previous is None:
            _OPTIONS.pop(protocol, None)
        else:
            _OPTIONS[protocol] = previous


def add_secrets(secrets: Iterable[str]) -> None:
    """Remember credentials that :func:`redact` must hide from every output."""
    _SECRETS.update(s for s in secrets if s)


def redact(message: str) -> str:
    """``message`` with every known credential (AWS_* variables, connection secrets) replaced by ``***``."""
    values = _SECRETS | {os.environ.get(name, "") for name in _SECRET_VARIABLES}
    for value in sorted((v for v in values if len(v) >= 4), key=len, reverse=True):
        message = message.replace(value, "***")
    return message


def s3_endpoint() -> str:
    """The S3 endpoint in use: from :func:`use_options`, else AWS_ENDPOINT_URL(_S3), else AWS's default."""
    options = _OPTIONS.get("s3", {})
    return (
        options.get("endpoint_url")
        or options.get("client_kwargs", {}).get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or "the default AWS S3 endpoint"
    )


def delta_options(root: Root) -> dict[str, str] | None:
    """Storage options for delta-rs (Delta tables) equivalent to ``root``'s fsspec ones; None for local roots.

    delta-rs reaches S3 through its own client, so the credentials, endpoint and region of the
    root (Airflow connection, else AWS_* variables) are handed over explicitly; ``conditional_put``
    makes its commits safe between concurrent writers on any S3 that honours If-None-Match.
    """
    if root.is_local:
        return None
    if root.protocol not in S3_PROTOCOLS:
        raise StorageError(f"{root.url}: the lake's Delta tables need a local path or an s3:// root")
    opts = merge_options(default_options(root.url), root.options)
    client = opts.get("client_kwargs", {})
    endpoint = (
        opts.get("endpoint_url")
        or client.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    region = (
        client.get("region_name")
        or opts.get("region_name")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    found = {
        "AWS_ACCESS_KEY_ID": opts.get("key") or os.environ.get("AWS_ACCESS_KEY_ID"),
        "AWS_SECRET_ACCESS_KEY": opts.get("secret") or os.environ.get("AWS_SECRET_ACCESS_KEY"),
        "AWS_SESSION_TOKEN": opts.get("token") or os.environ.get("AWS_SESSION_TOKEN"),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
        "AWS_ALLOW_HTTP": "true" if endpoint and endpoint.startswith("http://") else None,
        "conditional_put": "etag",
    }
    return {k: str(v) for k, v in found.items() if v}


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling (s3fs wraps botocore's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


OBJECT_GONE = frozenset({"NoSuchKey", "404"})
"""S3's answers that an object no longer exists (a HEAD's 404 has no code but its status)."""
OBJECT_REFUSALS = frozenset({"AccessDenied", "InvalidObjectState", "403", *OBJECT_GONE})
"""S3's answers that one object cannot be read: denied (an ACL or KMS key the reader lacks), archived
(Glacier) or gone. Not a refused credential (ExpiredToken, SignatureDoesNotMatch...), which is every
object's."""
LOCAL_REFUSALS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _store_code(exc: BaseException) -> str | None:
    """The error code of the object store's answer behind ``exc`` (botocore's, which s3fs keeps as
    the cause of the OSError it raises); None if the store did not answer."""
    for cause in _causes(exc):
        response = getattr(cause, "response", None)
        if isinstance(response, dict) and "Error" in response:
            return str(response["Error"].get("Code"))
    return None


def refused_object(exc: BaseException) -> bool:
    """Whether the store answered that this one object cannot be read (see OBJECT_REFUSALS; on local
    disk: gone, not permitted, or a symlink that O_NOFOLLOW refuses), rather than failing to answer
    (unreachable, throttled, credentials refused): an ingest goes on without it, and retries it."""
    if (code := _store_code(exc)) is not None:
        return code in OBJECT_REFUSALS
    return isinstance(exc, LOCAL_REFUSALS) or (isinstance(exc, OSError) and exc.errno == errno.ELOOP)


def object_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the object no longer exists (deleted or renamed since it was listed)."""
    code = _store_code(exc)
    return code in OBJECT_GONE if code is not None else isinstance(exc, FileNotFoundError)


def from_delta_rs(exc: BaseException) -> bool:
    """True for an OSError raised inside deltalake (delta-rs reports its object-store failures so)."""
    tb = exc.__traceback__
    while tb is not None:
        if "/deltalake/" in tb.tb_frame.f_code.co_filename:
            return isinstance(exc, OSError)
        tb = tb.tb_next
    return False


def describe_error(exc: BaseException) -> str | None:
    """One line for a failed object-store request, naming the endpoint; None if ``exc`` is not one."""
    for cause in _causes(exc):
        if from_delta_rs(cause):
            # delta-rs puts each cause of its error on a line of its own, after an arrow: one line here
            lines = (
                line.strip().lstrip("↳").strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).splitlines()
            )
            text = " ".join(": ".join(line for line in lines if line).split())[:600]
            remote = any(word in text for word in ("S3", "http")) or not re.search(r" /\w", text)  # local: /abs/path
            return redact(f"object storage at {s3_endpoint()} failed: {text}" if remote else f"storage failed: {text}")
        module = type(cause).__module__ or ""
        if not module.startswith(("botocore", "aiobotocore", "aiohttp")):
            continue
        response = getattr(cause, "response", None) or {}
        error = response.get("Error", {})
        if error:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            answer = " ".join(dict.fromkeys(str(x) for x in (status, error.get("Code")) if x))
            what = f"{getattr(cause, 'operation_name', 'request')} answered {answer}: {error.get('Message', '')}"
        else:
            what = f"{type(cause).__name__}: {cause}"
        first_line = what.splitlines()[0] if what else type(cause).__name__
        return redact(f"object storage at {s3_endpoint()} failed: {first_line}")
    return None


def error_line(exc: BaseException) -> str:
    """``exc`` as one line for a report: :func:`describe_error`'s for a storage failure, else its type
    and first line; credentials redacted."""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return describe_error(exc) or redact(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)


@dataclass(frozen=True)
class Root:
    """A storage root: the base path inside a filesystem (local, or fsspec's for a URL)."""

    path: str
    url: str
    options: dict[str, Any] = field(default_factory=dict, compare=False)
    remote: fsspec.AbstractFileSystem | None = field(default=None, compare=False, repr=False)

    @classmethod
    def open(cls, url: str, **storage_options: object) -> Root:
        """Resolve ``url`` (a local path or any fsspec URL) to a root. A remote root's filesystem is
        made now, with the options in force now (:func:`use_options`)."""
        url = str(url)
        if (path := local_path_of(url)) is not None:
            return cls(path=path.rstrip("/") or "/", url=url, options=dict(storage_options))
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **merge_options(default_options(url), storage_options))
        return cls(path=path.rstrip("/") or "/", url=url, options=dict(storage_options), remote=fs)

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem. A local root makes it on first use: importing fsspec is ~50 ms of a
        process, and an export or a read of local files does everything with ``os`` and polars."""
        if self.remote is not None:
            return self.remote
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(**merge_options(default_options(self.url), self.options))

    @property
    def is_local(self) -> bool:
        return self.remote is None

    @property
    def protocol(self) -> str:
        return protocol_of(self.url)

    def uri(self, *parts: str) -> str:
        """A location below this root as a URI other engines accept (an absolute path locally)."""
        path = self.join(*parts)
        return path if self.is_local else f"{self.protocol}://{path}"

    def join(self, *parts: str) -> str:
        """Absolute path (inside this root's filesystem) of a relative location; a first part that is
        already below this root stays as it is (remote paths have no leading ``/`` to say so)."""
        if parts and (parts[0] == self.path or parts[0].startswith(self.path.rstrip("/") + "/")):
            return posixpath.join(*parts)
        return posixpath.join(self.path, *parts)

    def relative(self, path: str) -> str:
        """``path`` relative to this root."""
        path = local_path(path) if self.is_local else self.fs._strip_protocol(path)
        return posixpath.relpath(path, self.path)

    def display(self, path: str) -> str:
        """A path as a user would write it (URL for remote roots)."""
        return path if self.is_local else f"{self.fs.unstrip_protocol(path)}"

    # --- reads -------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        return os.path.exists(local_path(path)) if self.is_local else self.fs.exists(path)

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        """``path``'s bytes, or its first ``limit`` only (one request either way)."""
        return self.fs.cat_file(path) if limit is None else self.fs.cat_file(path, start=0, end=limit)

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

    def walk(self, path: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """``(path, kind, info)`` for every entry below ``path``, unsorted; kind is ``file``, ``symlink``
        (never followed, so a link cannot lead outside the root) or ``other`` (a FIFO, a socket...).

        Local names that are not UTF-8 come back with surrogate escapes (``os.fsdecode``)."""
        if not self.is_local:
            for name, info in self.find_with_details(path).items():
                yield name, "file", info
            return
        if not os.path.isdir(path):
            return
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_symlink():
                    yield entry.path, "symlink", {}
                elif entry.is_dir(follow_symlinks=False):
                    yield from self.walk(entry.path)
                else:
                    stat = entry.stat(follow_symlinks=False)
                    kind = "file" if entry.is_file(follow_symlinks=False) else "other"
                    yield entry.path, kind, {"size": stat.st_size, "mtime": stat.st_mtime}

    def open_input(self, path: str, block_bytes: int = 4 << 20) -> Any:
        """``path`` opened for streamed reading; a local symlink is refused (O_NOFOLLOW), and an
        object is fetched ``block_bytes`` at a time, so memory does not grow with its size."""
        if self.is_local:
            return open(path, "rb", opener=lambda p, flags: os.open(p, flags | getattr(os, "O_NOFOLLOW", 0)))
        return self.fs.open(path, "rb", block_size=block_bytes, cache_type="readahead")

    def names(self, path: str) -> list[str]:
        """Names of the files directly in ``path``, sorted, listed afresh (never from a listing cache:
        other processes add and remove files there); empty if it does not exist."""
        if self.is_local:
            try:
                return sorted(e.name for e in os.scandir(path) if e.is_file(follow_symlinks=False))
            except FileNotFoundError:
                return []
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e["name"]) for e in entries if e["type"] == "file")

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

    def write_data_file(self, path: str, data: bytes) -> None:
        """Write a new, uniquely named file that only a later table commit makes visible.

        Locally without write_bytes's temporary name and rename, as nothing reads the file before the
        commit: half the system time for an ingest batch's ~800 small files. Synced all the same,
        so a commit never references a file a crash could still lose; a crash mid-write leaves an
        unreferenced file, which vacuum removes."""
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return
        os.makedirs(posixpath.dirname(path), exist_ok=True)
        try:
            _write_synced(path, [data])
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def read_pieces(self, path: str, size: int = PIECE_BYTES) -> Iterator[bytes]:
        """``path``'s bytes, ``size`` at a time (a file streamed on, never held whole)."""
        with self.fs.open(path, "rb") as handle:
            yield from pieces(handle, size)

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
                f.close()  # completes the upload: the object appears whole, or not at all
            except BaseException:
                with contextlib.suppress(Exception):  # abort: never publish a partial object
                    f.discard() if hasattr(f, "discard") else None
                f.closed = True  # discarded: nothing left to flush when it is garbage-collected
                raise
            return size
        return _publish_local(path, chunks, os.replace)

    def remove(self, path: str, recursive: bool = False) -> None:
        """Delete ``path`` (a folder with ``recursive``). A path that is gone, or goes meanwhile
        (another process removed it first), is not an error: the result is the same."""
        if not self.fs.exists(path):
            return
        folders = hasattr(self.fs, "call_s3") and recursive  # SeaweedFS keeps emptied folders as prefixes
        directories = (
            [path]
            + [p for p, info in self.fs.find(path, withdirs=True, detail=True).items() if info["type"] == "directory"]
            if folders
            else []
        )
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=recursive)
        if folders:
            for directory in sorted(set(directories), key=len, reverse=True):
                bucket, key = self._bucket_key(directory)
                self.fs.call_s3("delete_object", Bucket=bucket, Key=key.rstrip("/") + "/")
            self.fs.invalidate_cache(path)

    # --- conditional writes (the object-store lease) -----------------------------------------

    def _bucket_key(self, path: str) -> tuple[str, str]:
        if not hasattr(self.fs, "call_s3"):
            raise StorageError(f"{self.url}: conditional writes need an s3:// root (or a local one, which locks)")
        bucket, key, _ = self.fs.split_path(path)
        return bucket, key

    def _conditional(self, method: str, path: str, **kwargs: Any) -> dict | None:
        """One S3 request with a precondition: its response, or None if the precondition failed."""
        bucket, key = self._bucket_key(path)
        try:
            return self.fs.call_s3(method, Bucket=bucket, Key=key, **kwargs)
        except Exception as exc:
            if precondition_failed(exc):
                return None
            raise
        finally:
            self.fs.invalidate_cache(path)

    def create_if_absent(self, path: str, data: bytes) -> str | None:
        """Create ``path`` only if nothing is there; a truthy tag (ETag, or ``created`` locally), else None.

        S3: one PUT with If-None-Match: *. Locally: the bytes go to a hidden file that is then
        hard-linked to ``path`` (link refuses an existing name), so readers see all or nothing.
        """
        return self.create_chunks_if_absent(path, [data])

    def create_chunks_if_absent(self, path: str, chunks: Iterable[bytes]) -> str | None:
        """:meth:`create_if_absent` for a stream: spooled (memory, then a temporary file) and created once."""
        if self.is_local:
            if os.path.exists(path):
                return None
            try:
                _publish_local(path, chunks, os.link)  # link refuses an existing name; replace would not
            except FileExistsError:
                return None
            return "created"
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as body:
            for chunk in chunks:
                body.write(chunk)
            body.seek(0)
            response = self._conditional("put_object", path, Body=body, IfNoneMatch="*")
        return response and response.get("ETag")

    def replace_if(self, path: str, data: bytes, etag: str) -> str | None:
        """Overwrite ``path`` only while it still has ``etag`` (If-Match); the new ETag, or None."""
        response = self._conditional("put_object", path, Body=data, IfMatch=etag)
        return response and response.get("ETag")

    def delete_if(self, path: str, etag: str) -> bool:
        """Delete ``path`` only while it still has ``etag``; False if it changed meanwhile."""
        return self._conditional("delete_object", path, IfMatch=etag) is not None

    def etag(self, path: str) -> str | None:
        """The object's current ETag, asked of the server (no cache); None if there is none."""
        bucket, key = self._bucket_key(path)
        try:
            return self.fs.call_s3("head_object", Bucket=bucket, Key=key).get("ETag")
        except FileNotFoundError:
            return None


def pieces(stream: IO[bytes], size: int = PIECE_BYTES) -> Iterator[bytes]:
    """A readable stream's bytes, ``size`` at a time, until it ends."""
    while piece := stream.read(size):
        yield piece


def _write_synced(path: str, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to a new local file (FileExistsError if ``path`` exists) and sync it to disk;
    returns the bytes written."""
    size = 0
    with open(path, "xb") as f:
        for chunk in chunks:
            f.write(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    return size


def _publish_local(path: str, chunks: Iterable[bytes], publish: Callable[[str, str], None]) -> int:
    """Write ``chunks`` to a hidden temporary file beside ``path``, synced, then ``publish(tmp, path)``
    (rename or link: readers see the whole file or none); returns the bytes written."""
    directory = posixpath.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = posixpath.join(directory, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        size = _write_synced(tmp, chunks)
        publish(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return size


def precondition_failed(exc: BaseException) -> bool:
    """True if ``exc`` is an S3 412 Precondition Failed or 409 conditional conflict."""
    for cause in _causes(exc):
        response = getattr(cause, "response", None) or {}
        code = response.get("Error", {}).get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return True
    return False
