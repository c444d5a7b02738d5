"""Writes on fsspec backends that are not object stores (sftp, hdfs): a file that matters is
written to a temporary name and moved into place, never written in place where a reader (or a
crash) could see it torn; object stores keep their single PUT."""

from __future__ import annotations

import fsspec
from fsspec.implementations.memory import MemoryFileSystem

from farm.storage.fs import Storage


class RecordingSftp(MemoryFileSystem):
    """An in-memory stand-in for an SFTP server: records every write and move."""

    protocol = "farmtestsftp"
    root_marker = "/"
    store: dict = {}
    pseudo_dirs = [""]
    ops: list = []

    def pipe_file(self, path, value, **kwargs):
        type(self).ops.append(("write", path))
        return super().pipe_file(path, value, **kwargs)

    def mv(self, path1, path2, **kwargs):
        type(self).ops.append(("move", path1, path2))
        return super().mv(path1, path2, **kwargs)


def test_ledger_json_on_sftp_is_written_aside_then_moved():
    """A jobs root on an SFTP server: rewriting ledger.json writes a temporary sibling and moves
    it over the old file; the final name is never written to directly."""
    fsspec.register_implementation("farmtestsftp", RecordingSftp, clobber=True)
    storage = Storage("farmtestsftp:///jobs/j1")
    assert not storage.is_local and not storage.is_object_store
    storage.write_json("ledger.json", {"state": "running"})
    storage.write_json("ledger.json", {"state": "done"})
    assert storage.read_json("ledger.json") == {"state": "done"}
    writes = [op[1] for op in RecordingSftp.ops if op[0] == "write"]
    moves = [op for op in RecordingSftp.ops if op[0] == "move"]
    assert len(writes) == 2 and all(".tmp-" in w for w in writes)
    assert [m[2].endswith("jobs/j1/ledger.json") for m in moves] == [True, True] and [m[1] for m in moves] == writes
    assert storage.list() == ["ledger.json"]


def test_object_stores_keep_a_single_put():
    """A jobs root in memory:// (an object store, as s3:// is): one PUT, no temporary name."""
    storage = Storage("memory://farm-backends/j1")
    assert storage.is_object_store
    storage.write_json("ledger.json", {"state": "running"})
    assert storage.list() == ["ledger.json"]
