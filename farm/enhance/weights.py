"""The registry's weights files on disk: list them, fetch them (resumable, sha256-checked, placed
atomically) and verify them, plus the once-per-node verification cache workers use.

A file appears under its registry name only after its sha256 matched; until then it lives in
``<file>.part``, and the next fetch resumes it with an HTTP Range request. A weights dir is a
filesystem path (local disk or a shared mount such as NFS or EFS), because torch and facexlib load
from paths. Nothing here imports torch."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from farm import __version__
from farm.enhance.registry import WeightsFile, all_weights
from farm.errors import UnknownModel, UsageError, WeightsError
from farm.storage.fs import fsync_dir, hash_file_into, is_url, sha256_file

log = logging.getLogger(__name__)

#: Where a node keeps its verification cache (default: ``<temp dir>/farm-<uid>``).
NODE_CACHE_ENV = "FARM_NODE_CACHE_DIR"
PART_SUFFIX = ".part"
CHUNK_BYTES = 256 * 1024
TIMEOUT_S = 60.0

State = Literal["verified", "present", "missing", "mismatch"]
Outcome = Literal["downloaded", "resumed", "present", "failed"]


class FetchProgress(Protocol):
    """What a fetch reports while it runs (the CLI draws it as progress bars)."""

    def start(self, name: str, file: str, total: int | None, done: int) -> None: ...

    def advance(self, name: str, nbytes: int) -> None: ...

    def finish(self, name: str, outcome: Outcome) -> None: ...


@dataclass(frozen=True, slots=True)
class FileState:
    """One registry file in a weights dir."""

    name: str
    file: str
    path: str
    sha256: str  # the registry's
    size: int | None  # on disk; None when missing
    state: State  # ``present``: there, but not hashed on this node yet
    actual_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a fetch did for one file."""

    name: str
    file: str
    path: str
    outcome: Outcome
    bytes_downloaded: int = 0
    resumed_from: int = 0  # bytes of an earlier partial download that were kept
    error: str | None = None


# ----------------------------------------------------------------------------------------------
# Selecting files


def weights_path(weights_dir: str) -> str:
    """``weights_dir`` as an absolute path.

    Raises:
        UsageError: a URL (weights are loaded from paths; mount shared storage instead).
    """
    if is_url(weights_dir):
        raise UsageError(
            f"--weights-dir must be a path (local disk or a shared mount such as NFS/EFS), not {weights_dir}; "
            "mount the storage on every node, or bake the weights into the image"
        )
    if weights_dir.startswith("file://"):
        weights_dir = weights_dir[len("file://") :]
    return os.path.abspath(os.path.expanduser(weights_dir))


def select(names: Iterable[str] = (), registry: Mapping[str, WeightsFile] | None = None) -> dict[str, WeightsFile]:
    """The registry entries named (all of them when ``names`` is empty). A name is a registry
    name (``realesrgan-x4plus``, ``face-detector``), a file name (``RealESRGAN_x4plus.pth``) or
    a file name without ``.pth``.

    Raises:
        UnknownModel: a name that matches nothing.
    """
    registry = dict(all_weights() if registry is None else registry)
    wanted = list(names)
    if not wanted:
        return registry
    chosen: dict[str, WeightsFile] = {}
    for want in wanted:
        for name, weights in registry.items():
            if want in (name, weights.file, os.path.splitext(weights.file)[0]):
                chosen[name] = weights
                break
        else:
            raise UnknownModel(f"unknown weights {want!r}; known: {', '.join(registry)} (or their file names)")
    return chosen


def source_url(weights: WeightsFile, base_url: str | None = None) -> str:
    """Where to download ``weights`` from: the official URL, or ``<base_url>/<file>``."""
    return f"{base_url.rstrip('/')}/{weights.file}" if base_url else weights.url


# ----------------------------------------------------------------------------------------------
# Verifying, hashed once per node


def file_sha256(path: str) -> str:
    """The sha256 of a local file, from this node's cache when the file (path, size, mtime) has
    been hashed before: eight workers on one node hash a 350 MB file once, not eight times."""
    key, stamp = _stamp(path)
    cache = _cache_file()
    if cache is None:
        return sha256_file(path)
    # The lock makes the workers starting together on a node wait for the first one's hash.
    with _locked(cache + ".lock", remove=False):
        entries = _read_cache(cache)
        known = _lookup(entries, key, stamp)
        if known is not None:
            return known
        digest = sha256_file(path)
        entries[key] = {**stamp, "sha256": digest}
        _write_cache(cache, entries)
        return digest


def verify_file(path: str, weights: WeightsFile) -> None:
    """Refuse a registry file whose content is not the official release's (hashed once per node).

    Raises:
        WeightsError: naming the file, both hashes (abridged) and the fixes.
    """
    actual = file_sha256(path)
    if actual != weights.sha256:
        raise WeightsError(
            f"{path} is not the official {weights.file} (sha256 {actual[:12]}…, expected {weights.sha256[:12]}…); "
            "re-fetch it with `farm models fetch`, or pass --trust-weights if you changed it on purpose"
        )


def status(
    weights_dir: str,
    names: Iterable[str] = (),
    *,
    registry: Mapping[str, WeightsFile] | None = None,
    hash_files: bool = False,
) -> list[FileState]:
    """The state of each selected registry file in ``weights_dir``.

    Args:
        hash_files: hash every present file now (otherwise only this node's cache is consulted,
            and a file not hashed here yet is ``present``).
    """
    root = weights_path(weights_dir)
    out = []
    for name, weights in select(names, registry).items():
        path = os.path.join(root, weights.file)
        if not os.path.isfile(path):
            out.append(FileState(name, weights.file, path, weights.sha256, None, "missing"))
            continue
        size = os.path.getsize(path)
        actual = _fresh_sha256(path) if hash_files else _cached_sha256(path)
        state: State = "present" if actual is None else ("verified" if actual == weights.sha256 else "mismatch")
        out.append(FileState(name, weights.file, path, weights.sha256, size, state, actual))
    return out


# ----------------------------------------------------------------------------------------------
# Fetching


def fetch(
    weights_dir: str,
    names: Iterable[str] = (),
    *,
    registry: Mapping[str, WeightsFile] | None = None,
    base_url: str | None = None,
    force: bool = False,
    progress: FetchProgress | None = None,
) -> list[Fetched]:
    """Download the selected registry files into ``weights_dir``; files already there and
    verified are left alone. Each file is streamed into ``<file>.part`` (resumed with an HTTP
    Range request when an earlier fetch was interrupted), hashed, and renamed into place only when
    its sha256 is the registry's. A failing file does not stop the others.

    Args:
        registry: the files and their expected sha256 (default: farm's registry).
        base_url: serve the registry's file names from this URL instead of the official ones.
        force: replace files that are present but are not the official ones.

    Returns:
        One result per file, in registry order; ``outcome == "failed"`` carries the error.

    Raises:
        UnknownModel, UsageError: a bad name or weights dir.
        WeightsError: the weights dir cannot be created.
    """
    import requests

    root = weights_path(weights_dir)
    chosen = select(names, registry)
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights dir {root}: {exc.strerror or exc}") from None
    results = []
    with requests.Session() as session:
        session.headers["User-Agent"] = f"farm/{__version__}"
        for name, weights in chosen.items():
            path = os.path.join(root, weights.file)
            try:
                with _locked(os.path.join(root, f".{weights.file}.lock")):
                    results.append(_fetch_one(session, name, weights, path, source_url(weights, base_url), force, progress))
            except (WeightsError, OSError) as exc:
                message = str(exc) if isinstance(exc, WeightsError) else f"cannot place {path}: {exc.strerror or exc}"
                log.info("%s", message)  # returned to the caller, who reports it
                results.append(Fetched(name, weights.file, path, "failed", error=message))
                if progress is not None:
                    progress.finish(name, "failed")
    return results


def _fetch_one(session, name: str, weights: WeightsFile, path: str, url: str, force: bool, progress: FetchProgress | None) -> Fetched:
    if os.path.isfile(path):
        actual = file_sha256(path)
        if actual == weights.sha256:
            if progress is not None:
                size = os.path.getsize(path)
                progress.start(name, weights.file, size, size)
                progress.finish(name, "present")
            return Fetched(name, weights.file, path, "present")
        if not force:
            raise WeightsError(
                f"{path} is there but is not the official {weights.file} (sha256 {actual[:12]}…); "
                "pass --force to replace it, or keep it and pass --trust-weights to `farm submit`"
            )
    part = path + PART_SUFFIX
    # One retry from zero when the server says the part is already whole or too long (HTTP 416).
    for _ in range(2):
        kept = os.path.getsize(part) if os.path.isfile(part) else 0
        got = _download(session, name, weights, url, part, kept, progress)
        if got is None:
            _unlink(part)
            continue
        digest, received, kept = got
        if digest != weights.sha256:
            _unlink(part)
            raise WeightsError(
                f"{url} gave a {weights.file} whose sha256 is {digest[:12]}…, not the registry's {weights.sha256[:12]}…; "
                "nothing was placed (a wrong mirror or a changed release?)"
            )
        os.replace(part, path)
        fsync_dir(os.path.dirname(path))
        _remember(path, digest)
        if progress is not None:
            progress.finish(name, "resumed" if kept else "downloaded")
        return Fetched(name, weights.file, path, "resumed" if kept else "downloaded", received, kept)
    raise WeightsError(f"{url} refuses to serve {weights.file} (HTTP 416 even from the first byte)")


def _download(session, name: str, weights: WeightsFile, url: str, part: str, kept: int, progress: FetchProgress | None) -> tuple[str, int, int] | None:
    """Stream ``url`` into ``part`` after its first ``kept`` bytes; returns (sha256 of the whole
    part, bytes received, bytes kept), or None when the server says ``kept`` is past the end."""
    import requests

    headers = {"Range": f"bytes={kept}-"} if kept else {}
    received = 0
    streaming = False
    try:
        with session.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as response:
            if response.status_code == 416 and kept:
                # The part may already be complete (interrupted between the last byte and the rename).
                whole = sha256_file(part)
                if whole == weights.sha256:
                    if progress is not None:
                        progress.start(name, weights.file, kept, kept)
                    return whole, 0, kept
                return None
            if response.status_code == 206 and kept and _range_start(response.headers.get("Content-Range")) == kept:
                mode = "ab"
            elif response.status_code == 200:
                kept, mode = 0, "wb"  # no Range support here: start over
            else:
                raise WeightsError(f"cannot download {weights.file} from {url}: HTTP {response.status_code} {response.reason}")
            length = response.headers.get("Content-Length")
            total = kept + int(length) if length and length.isdigit() else None
            digest = hash_file_into(hashlib.sha256(), part) if kept else hashlib.sha256()
            if progress is not None:
                progress.start(name, weights.file, total, kept)
            streaming = True
            with open(part, mode) as f:
                for chunk in response.iter_content(CHUNK_BYTES):
                    f.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress.advance(name, len(chunk))
                f.flush()
                os.fsync(f.fileno())
    except requests.RequestException as exc:
        if not streaming:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"cannot download {weights.file} from {url}: {reason}; check the network, or --base-url") from None
        have = os.path.getsize(part) if os.path.isfile(part) else 0
        raise WeightsError(
            f"download of {weights.file} from {url} stopped after {have} bytes ({type(exc).__name__}); "
            "run the same command again to resume it"
        ) from None
    except OSError as exc:
        raise WeightsError(f"cannot write {part}: {exc.strerror or exc}") from None
    return digest.hexdigest(), received, kept


def _range_start(content_range: str | None) -> int | None:
    # "bytes 1000-4999/5000" -> 1000
    if not content_range or not content_range.startswith("bytes "):
        return None
    first = content_range[len("bytes ") :].split("-", 1)[0]
    return int(first) if first.isdigit() else None


# ----------------------------------------------------------------------------------------------
# Helpers


def _fresh_sha256(path: str) -> str:
    digest = sha256_file(path)
    _remember(path, digest)
    return digest


def _remember(path: str, digest: str) -> None:
    """Record a hash just computed (or a file just placed) so this node need not hash it again."""
    cache = _cache_file()
    if cache is None:
        return
    key, stamp = _stamp(path)
    with _locked(cache + ".lock", remove=False):
        entries = _read_cache(cache)
        entries[key] = {**stamp, "sha256": digest}
        _write_cache(cache, entries)


def _cached_sha256(path: str) -> str | None:
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
        _unlink(tmp)


@contextlib.contextmanager
def _locked(path: str, remove: bool = True) -> Iterator[None]:
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
                _unlink(path)
            os.close(fd)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

