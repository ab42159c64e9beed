"""Local roots: named as fsspec names them, without importing fsspec until a call needs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fsspec.core import url_to_fs

from include.audit.storage import Root


@pytest.mark.parametrize("form", ["lake", "./lake/", "a/../lake", "file://{cwd}/lake", "~/lake", "{cwd}/lake//"])
def test_a_local_root_has_the_path_fsspec_gives_it(form: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    url = form.format(cwd=tmp_path)
    root = Root.open(url)
    _, expected = url_to_fs(url)
    assert root.is_local and root.path == os.path.abspath(expected)
    assert root.relative("file://" + root.join("events", "x.parquet")) == "events/x.parquet"


def test_a_local_root_still_offers_fsspec_operations(tmp_path: Path) -> None:
    root = Root.open(str(tmp_path))
    root.write_bytes(root.join("d", "f.txt"), b"abc")
    assert root.find(root.path) == [root.join("d", "f.txt")] and root.listdir(root.path) == ["d"]
    assert root.read_bytes(root.join("d", "f.txt")) == b"abc"
    os.symlink(root.join("nothing"), root.join("broken"))
    os.symlink(root.join("d"), root.join("linked"))
    fs = url_to_fs(str(tmp_path))[0]
    for name in ("broken", "linked", "d", "nothing"):  # as fsspec says: a dangling link is not there
        assert root.exists(root.join(name)) == fs.exists(root.join(name)), name


def test_a_data_file_is_written_once_under_its_own_name(tmp_path: Path) -> None:
    from include.audit.storage import StorageError

    root = Root.open(str(tmp_path))
    path = root.join("events", "event_date=2026-11-26", "part-1.snappy.parquet")
    root.write_data_file(path, b"PAR1 data")
    assert root.read_bytes(path) == b"PAR1 data"
    assert sorted(os.listdir(os.path.dirname(path))) == ["part-1.snappy.parquet"]  # no temporary name left
    with pytest.raises(StorageError, match="cannot write"):  # a name is never reused: nothing overwritten
        root.write_data_file(path, b"other")
    assert root.read_bytes(path) == b"PAR1 data"


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        ("AccessDenied", True),  # the object's ACL or KMS key
        ("InvalidObjectState", True),  # archived (Glacier)
        ("NoSuchKey", True),  # gone since it was listed
        ("403", True),  # a HEAD's answer has no code but its status
        ("404", True),
        ("ExpiredToken", False),  # the credentials: every object's, not this one's
        ("SignatureDoesNotMatch", False),
        ("SlowDown", False),
        ("InternalError", False),
    ],
)
def test_an_object_the_store_refuses_is_told_from_a_store_that_fails(code: str, refused: bool) -> None:
    """As s3fs raises them: botocore's error, translated to an OSError that keeps it as its cause."""
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    from include.audit.storage import object_gone, refused_object

    error = translate_boto_error(ClientError({"Error": {"Code": code, "Message": "..."}}, "GetObject"))
    assert refused_object(error) is refused
    assert object_gone(error) is (code in ("NoSuchKey", "404"))


def test_a_local_file_gone_or_a_symlink_is_refused_and_a_dead_endpoint_is_not(tmp_path: Path) -> None:
    from botocore.exceptions import EndpointConnectionError

    from include.audit.storage import object_gone, refused_object

    root = Root.open(str(tmp_path))
    (tmp_path / "target.jsonl").write_text("{}\n")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "target.jsonl")
    for name in ("gone.jsonl", "link.jsonl"):  # no such file; O_NOFOLLOW refuses a symlink (ELOOP)
        with pytest.raises(OSError) as raised:
            root.open_input(str(tmp_path / name))
        assert refused_object(raised.value) and object_gone(raised.value) is (name == "gone.jsonl"), name
    assert not refused_object(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    assert not refused_object(ConnectionResetError())
