"""The checks behind `farm doctor`: is everything farm needs on this machine (and, through Ray, on
every node of a cluster)? Each check returns :class:`Check` values (ok, info, warn or fail; the
machine is healthy when none fails); nothing here prints."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import uuid
from dataclasses import dataclass
from typing import Literal

from farm.storage.fs import Storage, is_url, nearest_existing, normalize

Status = Literal["ok", "info", "warn", "fail"]

#: Encoders farm uses, and how bad it is to lack each: segments are always FFV1.
ENCODERS: tuple[tuple[str, Status, str], ...] = (
    ("ffv1", "fail", "every shard is an FFV1 segment; install PyAV's binary wheel (pip install av)"),
    ("libx264", "warn", "the default --codec x264 will not work; use --codec ffv1, or a PyAV build with libx264"),
    ("libx265", "warn", "--codec x265 will not work"),
)


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    status: Status
    detail: str


def healthy(checks: list[Check]) -> bool:
    """True when nothing farm needs for ``--device cpu`` is missing."""
    return all(c.status != "fail" for c in checks)


def local_checks(weights_dir: str, jobs_root: str) -> list[Check]:
    """Everything about this machine, in the order a user would fix it."""
    return [
        check_python(),
        *check_torch(),
        check_model_libraries(),
        *check_av(),
        check_ray(),
        *check_weights(weights_dir),
        check_jobs_root(jobs_root),
    ]


def check_python() -> Check:
    version = platform.python_version()
    if sys.version_info < (3, 10):
        return Check("Python", "fail", f"{version} at {sys.executable}; farm needs 3.10 or newer")
    return Check("Python", "ok", f"{version} at {sys.executable}")


def check_torch() -> list[Check]:
    """torch itself, then its view of the GPUs."""
    try:
        import torch
    except ImportError as exc:
        return [Check("torch", "fail", f"cannot import torch ({exc}); run scripts/setup.sh")]
    built_for = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    checks = [Check("torch", "ok", f"{torch.__version__}, {built_for}")]
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append(f"{i}: {props.name} ({props.total_memory / 2**30:.0f} GiB)")
        checks.append(Check("GPU", "ok", "; ".join(gpus)))
    else:
        why = "torch is a CPU-only build" if not torch.version.cuda else "torch sees no CUDA device"
        checks.append(Check("GPU", "info", f"no GPU: {why}; farm runs on the CPU (--device cpu), much slower"))
    return checks


def check_model_libraries() -> Check:
    """basicsr needs the torchvision shim before it imports; then realesrgan, gfpgan, facexlib."""
    try:
        from farm.enhance.patches import install_torchvision_shim

        install_torchvision_shim()
        import basicsr  # noqa: F401
        import facexlib  # noqa: F401
        import gfpgan  # noqa: F401
        import realesrgan  # noqa: F401
    except Exception as exc:  # any import-time failure of these libraries is the finding
        return Check(
            "basicsr + models",
            "fail",
            f"cannot import {type(exc).__name__}: {exc}; run scripts/setup.sh (basicsr is built with --no-build-isolation after torch)",
        )
    versions = ", ".join(f"{name} {_version(name)}" for name in ("basicsr", "realesrgan", "gfpgan", "facexlib"))
    return Check("basicsr + models", "ok", f"{versions} (torchvision shim installed)")


def check_av() -> list[Check]:
    try:
        import av
    except ImportError as exc:
        return [Check("PyAV", "fail", f"cannot import av ({exc}); pip install av")]
    checks = [Check("PyAV", "ok", f"{av.__version__}, FFmpeg libavcodec {'.'.join(map(str, av.library_versions.get('libavcodec', ())))}")]
    for encoder, severity, consequence in ENCODERS:
        try:
            av.codec.Codec(encoder, "w")
        except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpegError
            checks.append(Check(f"encoder {encoder}", severity, f"missing: {consequence}"))
        else:
            checks.append(Check(f"encoder {encoder}", "ok", "available"))
    return checks


def check_ray() -> Check:
    version = _version("ray")
    if version is None:
        return Check("Ray", "fail", "ray is not installed; pip install 'ray[default]'")
    return Check("Ray", "ok", version)


def check_weights(weights_dir: str) -> list[Check]:
    """One line per registry file when any is present (hashed once per node); one line when none is."""
    from farm.enhance.hashes import file_sha256
    from farm.enhance.weights import status
    from farm.errors import FarmError

    try:
        files = status(weights_dir)
    except FarmError as exc:
        return [Check("weights", "fail", str(exc))]
    fetch = f"farm models fetch --weights-dir {weights_dir}"
    if all(f.state == "missing" for f in files):
        return [Check("weights", "warn", f"no registry weights in {weights_dir}; run `{fetch}`")]
    checks = []
    for f in files:
        name = f"weights {f.file}"
        if f.state == "missing":
            checks.append(Check(name, "warn", f"missing; run `{fetch} {f.name}`"))
            continue
        actual = f.actual_sha256 or file_sha256(f.path)  # status() knows it when this node hashed it
        if actual == f.sha256:
            checks.append(Check(name, "ok", f"verified ({(f.size or 0) / 2**20:.1f} MiB)"))
        else:
            checks.append(Check(name, "fail", f"not the official file (sha256 {actual[:12]}…, expected {f.sha256[:12]}…); "
                                f"run `{fetch} --force {f.name}`, or pass --trust-weights to farm submit if you changed it on purpose"))
    return checks


def check_jobs_root(jobs_root: str) -> Check:
    """Write and remove a probe file; a jobs root that does not exist yet only needs a writable
    parent (``farm submit`` creates it)."""
    name = f"jobs root {jobs_root}"
    if not is_url(jobs_root):
        path = normalize(jobs_root)  # as Storage reads it (``file://`` too)
        if not os.path.isdir(path):
            parent = nearest_existing(path)
            if os.access(parent, os.W_OK | os.X_OK):
                return Check(name, "info", f"does not exist yet; `farm submit` creates it under {parent}")
            return Check(name, "fail", f"does not exist, and {parent} is not writable; pass --jobs-root or set FARM_JOBS_ROOT")
    probe = f".farm-doctor-{uuid.uuid4().hex[:8]}"
    try:
        storage = Storage(jobs_root)
        storage.write_bytes(probe, b"ok")
        storage.remove(probe)
    except Exception as exc:  # storage back ends raise many types; the finding is that it fails
        return Check(name, "fail", f"not writable: {exc}")
    return Check(name, "ok", "writable")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
