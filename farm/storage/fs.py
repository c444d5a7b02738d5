"""Where jobs live, over fsspec: one code path for a local path, an NFS mount or an object store URL
(``s3://bucket/jobs``). A file that matters is never visible half-written: a temporary sibling,
flushed and renamed; on an object store, a single PUT."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from farm.errors import InputError, StorageError

TMP_MARK = ".tmp-"
#: fsspec protocols of object stores: a single PUT makes an object appear whole. Every other
#: non-local backend (sftp, hdfs, smb, ...) is a filesystem where a write is visible while it
#: happens, so files are written to a temporary name and moved into place.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2", "memory"})


def is_url(location: str) -> bool:
    """True for ``scheme://...`` locations other than ``file://``."""
    return "://" in location and not location.startswith("file://")


def normalize(location: str) -> str:
    """An absolute path for local locations, the URL without its trailing slashes otherwise.

    Raises:
        InputError: a URL that names no bucket or host (``s3://``).
    """
    if is_url(location):
        scheme, _, rest = location.partition("://")
        if not rest.strip("/"):
            raise InputError(f"{location} names no bucket or host; give one, e.g. {scheme}://bucket/path")
        return location.rstrip("/")
    if location.startswith("file://"):
        location = location[len("file://") :]
    return str(Path(location).expanduser().resolve())


class Storage:
    """A directory on local or remote storage, addressed by paths relative to it."""

    def __init__(self, location: str) -> None:
        self.location = normalize(location)
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.location)
        except (ImportError, ValueError) as exc:
            raise StorageError(f"cannot use storage {self.location!r}: {exc}") from exc
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.protocols = tuple(self.fs.protocol) if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        self.is_object_store = not self.is_local and bool(OBJECT_STORES.intersection(self.protocols))

    def __repr__(self) -> str:
        return f"Storage({self.location!r})"

    def url(self, rel: str = "") -> str:
        """The location of ``rel`` as a user would type it (path or URL)."""
        return f"{self.location}/{rel}" if rel else self.location

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def sub(self, rel: str) -> Storage:
        return Storage(self.url(rel))

    def exists(self, rel: str) -> bool:
        return self._call("check", rel, self.fs.exists, self._path(rel))

    def size(self, rel: str) -> int:
        return int(self._call("stat", rel, self.fs.size, self._path(rel)))

    def list(self, rel: str = "") -> list[str]:
        """Names (not paths) directly under ``rel``; empty if it does not exist."""
        path = self._path(rel)
        if not self.fs.exists(path):
            return []
        entries = self._call("list", rel, self.fs.ls, path, detail=False)
        return sorted(os.path.basename(str(e).rstrip("/")) for e in entries)

    def invalidate_cache(self, rel: str = "") -> None:
        """Forget cached listings under ``rel`` (s3fs and other object stores cache them), so that
        the next :meth:`list` sees what another machine wrote since."""
        if not self.is_local:
            self.fs.invalidate_cache(self._path(rel))

    def makedirs(self, rel: str = "") -> None:
        if self.is_local:
            self._call("create", rel, self.fs.makedirs, self._path(rel), exist_ok=True)

    def read_bytes(self, rel: str) -> bytes:
        return self._call("read", rel, self.fs.cat_file, self._path(rel))

    def read_json(self, rel: str) -> Any:
        data = self.read_bytes(rel)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StorageError(f"{self.url(rel)} is not valid JSON ({exc}); delete it or pass --restart") from exc

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``rel`` so that readers see either the old content or all of the new."""
        if self.is_object_store:
            self._call("write", rel, self.fs.pipe_file, self._path(rel), data)
            return
        if not self.is_local:
            self._write_and_move(rel, data)
            return
        final = Path(self._path(rel))
        tmp = _tmp_sibling(final)
        try:
            _write_synced(tmp, data)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write {final}: {exc.strerror or exc}") from exc

    def _write_and_move(self, rel: str, data: bytes) -> None:
        """A remote filesystem (sftp, hdfs): write a temporary sibling, then move it into place."""
        final = self._path(rel)
        tmp = f"{final}{TMP_MARK}{uuid.uuid4().hex[:8]}"
        self._call("write", rel, self.fs.pipe_file, tmp, data)
        try:
            self._call("write", rel, self.fs.mv, tmp, final)
        except StorageError:
            # Some servers refuse to rename onto an existing file (plain SFTP): replace it. A
            # reader then sees the old file, no file, or the new one; never a torn one.
            if not self.fs.exists(final):
                raise
            self._call("write", rel, self.fs.rm, final)
            self._call("write", rel, self.fs.mv, tmp, final)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` holding ``data`` unless it exists; True if this call created it.

        Of several machines racing to create one name, exactly one wins: a hard link of a
        finished temporary file on a filesystem (atomic on NFS too), a conditional PUT
        (``If-None-Match: *``) on S3, the backend's exclusive open ("xb") elsewhere."""
        path = self._path(rel)
        if self.is_local:
            final = Path(path)
            tmp = _tmp_sibling(final)
            try:
                _write_synced(tmp, data)
                os.link(tmp, final)
            except FileExistsError:
                return False
            except OSError as exc:
                raise StorageError(f"cannot create {final}: {exc.strerror or exc}") from exc
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            fsync_dir(final.parent)
            return True
        try:
            if "s3" in self.protocols:
                self.fs.pipe_file(path, data, mode="create")
            else:
                with self.fs.open(path, "xb") as f:
                    f.write(data)
        except FileExistsError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot create {self.url(rel)}: {exc}") from exc
        return True

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=1, sort_keys=True).encode())

    def scratch_file(self, rel: str) -> str:
        """A local path to build the content of ``rel`` in, before :meth:`commit_file`.

        On a filesystem it is a temporary sibling of ``rel`` (the commit is a rename); otherwise a
        file in the local temp dir (the commit is an upload)."""
        suffix = Path(rel).suffix
        if self.is_local:
            final = Path(self._path(rel))
            final.parent.mkdir(parents=True, exist_ok=True)
            return str(final.with_name(f"{final.stem}{TMP_MARK}{uuid.uuid4().hex[:8]}{suffix}"))
        fd, path = tempfile.mkstemp(prefix="farm-", suffix=suffix)
        os.close(fd)
        return path

    def commit_file(self, scratch: str, rel: str) -> None:
        """Make the finished ``scratch`` file appear whole at ``rel``; ``scratch`` is gone after."""
        try:
            if self.is_local:
                with open(scratch, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(scratch, self._path(rel))
                fsync_dir(Path(self._path(rel)).parent)
            else:
                self.fs.put_file(scratch, self._path(rel))
                os.unlink(scratch)
        except OSError as exc:
            raise StorageError(f"cannot store {self.url(rel)}: {exc}") from exc

    def remove(self, rel: str, recursive: bool = False) -> None:
        path = self._path(rel)
        if self.fs.exists(path):
            self._call("remove", rel, self.fs.rm, path, recursive=recursive)

    def open(self, rel: str, mode: str = "rb") -> IO:
        return self._call("open", rel, self.fs.open, self._path(rel), mode)

    def _call(self, verb: str, rel: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot {verb} {self.url(rel)}: {exc}") from exc


def fsync_dir(path: str | Path) -> None:
    # Some filesystems (and NFS mounts) refuse fsync on directories; the rename still holds.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def nearest_existing(path: str) -> str:
    """``path``, or its closest ancestor that exists (a local path)."""
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def open_location(location: str) -> IO | str:
    """What PyAV should open for ``location``: the path itself when local, else a file object."""
    location = normalize(location)
    if not is_url(location):
        return location
    try:
        return fsspec.open(location, "rb").open()
    except FileNotFoundError:
        raise
    except (ImportError, ValueError, OSError) as exc:
        raise StorageError(f"cannot open {location}: {exc}") from exc


def split_location(location: str) -> tuple[str, str]:
    """``(parent, name)`` of a path or URL."""
    location = normalize(location)
    parent, _, name = location.rpartition("/")
    return parent or "/", name


def sha256_file(path: str) -> str:
    """Hex sha256 of a local file, read in chunks."""
    return hash_file_into(hashlib.sha256(), path).hexdigest()


def hash_file_into(digest: Any, path: str, chunk: int = 1 << 20) -> Any:
    """``digest`` (a hashlib object) updated with the content of the local file ``path``."""
    with open(path, "rb") as f:
        return hash_stream_into(digest, f, chunk)


def hash_stream_into(digest: Any, f: IO, chunk: int = 1 << 20) -> Any:
    """``digest`` updated with what is left to read of the open binary file ``f``, a block at a time."""
    while block := f.read(chunk):
        digest.update(block)
    return digest


def _tmp_sibling(final: Path) -> Path:
    """A unique temporary name beside ``final`` (readers and listings skip the mark)."""
    return final.with_name(f"{final.name}{TMP_MARK}{uuid.uuid4().hex[:8]}")


def _write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to a new local file and flush it to disk before it is renamed or linked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
