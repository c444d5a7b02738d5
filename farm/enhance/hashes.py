"""Hashing weights files once per node: a cache of sha256 digests keyed by path, size and mtime, in
a private directory of this user (:data:`NODE_CACHE_ENV`), shared by the workers of a node under a
file lock, so eight workers starting together hash a 350 MB file once, not eight times."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator

from farm.storage.fs import sha256_file

log = logging.getLogger(__name__)

#: Where a node keeps its verification cache (default: ``<temp dir>/farm-<uid>``).
NODE_CACHE_ENV = "FARM_NODE_CACHE_DIR"


def file_sha256(path: str) -> str:
    """The sha256 of a local file, from this node's cache when the file (path, size, mtime) has
    been hashed before: eight workers on one node hash a 350 MB file once, not eight times."""
    key, stamp = _stamp(path)
    cache = _cache_file()
    if cache is None:
        return sha256_file(path)
    # The lock makes the workers starting together on a node wait for the first one's hash.
    with locked(cache + ".lock", remove=False):
        entries = _read_cache(cache)
        known = _lookup(entries, key, stamp)
        if known is not None:
            return known
        digest = sha256_file(path)
        entries[key] = {**stamp, "sha256": digest}
        _write_cache(cache, entries)
        return digest


def fresh_sha256(path: str) -> str:
    digest = sha256_file(path)
    remember(path, digest)
    return digest


def remember(path: str, digest: str) -> None:
    """Record a hash just computed (or a file just placed) so this node need not hash it again."""
    cache = _cache_file()
    if cache is None:
        return
    key, stamp = _stamp(path)
    with locked(cache + ".lock", remove=False):
        entries = _read_cache(cache)
        entries[key] = {**stamp, "sha256": digest}
        _write_cache(cache, entries)


def cached_sha256(path: str) -> str | None:
    cache = _cache_file()
    if cache is None:
        return None
    return _lookup(_read_cache(cache), *_stamp(path))


def _stamp(path: str) -> tuple[str, dict[str, int]]:
    """The cache key of a file and what must not have changed for its cached hash to hold."""
    st = os.stat(path)
    return os.path.realpath(path), {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _lookup(entries: dict, key: str, stamp: dict[str, int]) -> str | None:
    entry = entries.get(key)
    if entry and all(entry.get(k) == v for k, v in stamp.items()) and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    return None


def _cache_file() -> str | None:
    """This user's node-local cache file, or None when no private directory is available (then
    every check hashes): a shared temp dir must not let another user vouch for a file."""
    root = os.environ.get(NODE_CACHE_ENV) or os.path.join(tempfile.gettempdir(), f"farm-{os.getuid()}")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        st = os.stat(root)
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        log.warning("not caching weights hashes: %s is not a private directory of this user", root)
        return None
    return os.path.join(root, "weights-sha256.json")


def _read_cache(cache: str) -> dict:
    try:
        with open(cache) as f:
            entries = json.load(f)
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: str, entries: dict) -> None:
    tmp = f"{cache}.tmp-{os.getpid()}"
    # Forget files that are gone (temporary dirs, moved weights) so the cache stays small.
    entries = {path: entry for path, entry in entries.items() if os.path.exists(path)}
    try:
        with open(tmp, "w") as f:
            json.dump(entries, f, indent=1, sort_keys=True)
        os.replace(tmp, cache)
    except OSError as exc:  # a cache that cannot be written only costs another hash later
        log.debug("cannot write %s: %s", cache, exc)
        unlink(tmp)


@contextlib.contextmanager
def locked(path: str, remove: bool = True) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if needed), so two fetches into one shared weights
    dir do not write one ``.part`` at once. With ``remove`` the lock file is deleted afterwards;
    a waiter that then holds the lock of a deleted file notices (inode changed) and locks again."""
    fd = None
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # a filesystem without locks: go on unlocked
            log.debug("cannot lock %s: %s", path, exc)
            if fd is not None:
                os.close(fd)
            fd = None
            break
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        if fd is not None:
            if remove:
                unlink(path)
            os.close(fd)


def unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

