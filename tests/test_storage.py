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
