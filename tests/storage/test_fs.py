"""Storage: atomic writes that never leave a half-written file visible, over fsspec."""

from __future__ import annotations

import os

import pytest

from farm.errors import StorageError
from farm.storage.fs import TMP_MARK, Storage


def test_write_is_atomic_and_leaves_no_temporary(tmp_path):
    s = Storage(str(tmp_path / "root"))
    s.write_json("a/b.json", {"x": 1})
    s.write_json("a/b.json", {"x": 2})
    assert s.read_json("a/b.json") == {"x": 2}
    assert os.listdir(tmp_path / "root" / "a") == ["b.json"]


def test_scratch_then_commit(tmp_path):
    s = Storage(str(tmp_path))
    scratch = s.scratch_file("segments/000001-ab.mkv")
    assert TMP_MARK in os.path.basename(scratch) and os.path.dirname(scratch) == str(tmp_path / "segments")
    with open(scratch, "wb") as f:
        f.write(b"data")
    s.commit_file(scratch, "segments/000001-ab.mkv")
    assert s.read_bytes("segments/000001-ab.mkv") == b"data" and not os.path.exists(scratch)
    assert s.list("segments") == ["000001-ab.mkv"]
    assert s.list("missing") == []


def test_unwritable_location_is_a_storage_error(tmp_path):
    """A jobs root below a regular file cannot be written, whoever runs farm."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="cannot write"):
        Storage(str(tmp_path / "file" / "jobs")).write_json("x.json", {})


def test_memory_filesystem_urls_work(tmp_path):
    s = Storage("memory://farm-test/jobs")
    s.write_json("j/job.json", {"ok": True})
    assert s.read_json("j/job.json") == {"ok": True}
    assert not s.is_local
