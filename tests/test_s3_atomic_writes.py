"""On S3 a streamed write is a multipart upload: invisible until it completes, aborted if the stream fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from include.audit.storage import Root

pytestmark = pytest.mark.s3

PART = 5 * 2**20  # S3's smallest multipart part


def pending_uploads(root: Root) -> list[str]:
    bucket, prefix, _ = root.fs.split_path(root.path)
    listed = root.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
    return [u["Key"] for u in listed.get("Uploads") or []]


@pytest.fixture
def root(s3_prefix: str) -> Root:
    return Root.open(s3_prefix, default_block_size=PART)  # parts go out as soon as 5 MiB are buffered


def test_streamed_object_appears_only_when_complete(root: Root) -> None:
    path = root.join("big.csv")
    seen_midway = []

    def chunks() -> Iterator[bytes]:
        yield b"a" * (PART + 1)
        yield b"b" * (PART + 1)  # the first part is uploaded by now
        root.fs.invalidate_cache()
        seen_midway.append((root.exists(path), pending_uploads(root)))
        yield b"c" * 10

    assert root.write_chunks(path, chunks()) == 2 * (PART + 1) + 10
    assert seen_midway == [(False, [path.split("/", 1)[1]])]
    root.fs.invalidate_cache()
    assert root.fs.size(path) == 2 * (PART + 1) + 10 and pending_uploads(root) == []


def test_failed_stream_leaves_nothing(root: Root) -> None:
    path = root.join("broken.csv")

    def chunks() -> Iterator[bytes]:
        yield b"a" * (PART + 1)
        yield b"b" * (PART + 1)
        raise RuntimeError("the lake read failed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        root.write_chunks(path, chunks())
    root.fs.invalidate_cache()
    assert not root.exists(path) and pending_uploads(root) == []
