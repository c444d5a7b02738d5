"""The weights files on a node: where a job's model finds them (registry files or a user's own), the
checks before anything loads, on the driver (:func:`check_weights`) and on every worker
(:func:`check_node_weights`), and ``farm models``' listing. No torch at import time."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from farm.config import ModelConfig
from farm.enhance import pypi
from farm.enhance.arch import gfpgan_channel_multiplier, load_state_dict, sr_arch_from_state_dict
from farm.enhance.factories import Factories, resolve_factories
from farm.enhance.hashes import cached_sha256, file_sha256, fresh_sha256
from farm.enhance.registry import FACE_DETECTOR, FACE_MODELS, FACE_PARSER, SR_MODELS, WeightsFile, all_weights
from farm.errors import MissingWeights, UnknownModel, UsageError, WeightsError
from farm.storage.fs import is_url

State = Literal["verified", "present", "missing", "mismatch"]


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
    source: str | None = None  # "official", or "pypi:<package>==<version>" for a converted file


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


# ----------------------------------------------------------------------------------------------
# A job's files


def registry_path(weights_dir: str | None, weights: WeightsFile, what: str) -> str:
    """Where a registry file must be, or a MissingWeights naming the file and the fix."""
    if weights_dir is None:
        raise MissingWeights(f"no weights dir for {what} ({weights.file}); pass --weights-dir DIR")
    path = os.path.join(weights_dir, weights.file)
    if not os.path.isfile(path):
        # GFPGAN's and facexlib's files are on GitHub only (no PyPI package has them).
        face = weights.pypi is None and what.startswith("face")
        raise MissingWeights(
            f"{path} not found ({what}); run `farm models fetch --weights-dir {weights_dir}` "
            "or pass --weights-dir pointing at a folder that has it"
            + ("; it comes from GitHub only: without GitHub, pass --no-face to upscale without restoring faces" if face else "")
        )
    return path


def resolve_sr(config: ModelConfig) -> tuple[str, WeightsFile | None]:
    """The SR weights path for ``config`` and, for registry models, the registry entry."""
    entry = sr_model(config)
    if config.sr_weights:
        return config.sr_weights, None
    return registry_path(config.weights_dir, entry.weights, f"model {config.model}"), entry.weights


def sr_model(config: ModelConfig):
    """The registry entry of ``config.model``.

    Raises:
        UnknownModel: naming the known models.
    """
    if config.model not in SR_MODELS:
        raise UnknownModel(f"unknown model {config.model!r}; known: {', '.join(SR_MODELS)}")
    return SR_MODELS[config.model]


def check_weights(config: ModelConfig) -> int:
    """Fail fast, before any work, on weights that are missing, damaged, or do not fit the
    request; returns the SR model's native scale.

    Raises:
        UnknownModel, MissingWeights, WeightsError.
    """
    factories = resolve_factories(config)
    if factories.enhancer is not None:
        return factories.enhancer.model_scale(config)
    # The driver's own files decide the job's weights source; the workers' must then agree.
    check_node_weights(dataclasses.replace(config, sr_weights_source=sr_weights_source(config)), factories)
    path, _ = resolve_sr(config)
    arch = sr_arch_from_state_dict(load_state_dict(path), path)
    expected = sr_model(config)
    if config.sr_weights is None and (arch.kind, arch.scale) != (expected.arch, expected.scale):
        raise WeightsError(f"{path} is a x{arch.scale} {arch.kind} model, but {config.model} is x{expected.scale} {expected.arch}")
    if config.face:
        face_path, _ = face_weights_path(config)
        gfpgan_channel_multiplier(load_state_dict(face_path), face_path)
    return arch.scale


def sr_flop_per_input_pixel(config: ModelConfig) -> float | None:
    """The SR network's cost per input pixel (None for a stand-in enhancer's model)."""
    if resolve_factories(config).enhancer is not None:
        return None
    path, _ = resolve_sr(config)
    return sr_arch_from_state_dict(load_state_dict(path), path).flop_per_input_pixel()


def registry_files(config: ModelConfig, factories: Factories | None = None) -> list[tuple[str, WeightsFile]]:
    """The registry files ``config`` loads, with their paths; a user's own weights files
    (``--sr-weights``, ``--face-weights``) are not registry files, and an enhancer or detector
    from a factory (``factories``, default: this process's registry) loads none.

    Raises:
        UnknownModel, MissingWeights: naming the file and the command that fetches it.
    """
    factories = resolve_factories(config) if factories is None else factories
    if factories.enhancer is not None:
        return []
    if config.face and factories.face_detector is None and config.face_detector != "retinaface_resnet50":
        raise UsageError(f"unknown face detector {config.face_detector!r}; known: retinaface_resnet50")
    files = []
    path, registry = resolve_sr(config)
    if registry is not None:
        files.append((path, registry))
    if config.face:
        face_path, face_registry = face_weights_path(config)
        if face_registry is not None:
            files.append((face_path, face_registry))
        files.append((registry_path(config.weights_dir, FACE_PARSER, "face parser"), FACE_PARSER))
        if factories.face_detector is None:
            files.append((registry_path(config.weights_dir, FACE_DETECTOR, "face detector"), FACE_DETECTOR))
    return files


def check_node_weights(config: ModelConfig, factories: Factories | None = None, node: str | None = None) -> None:
    """On a worker, before loading: every registry file ``config`` needs is in the weights dir
    and (unless ``trust_weights``) is the official release, and a user's own weights files
    (``--sr-weights``, ``--face-weights``) are the ones the job was submitted with (their sha256
    in the job's record), not whatever this node holds at that path. Hashes are cached per node,
    so the workers of one node hash each file once.

    Raises:
        UnknownModel, MissingWeights, WeightsError: naming the file (and ``node``).
    """
    factories = resolve_factories(config) if factories is None else factories
    files = registry_files(config, factories)  # raises for an unknown model or detector, or a missing file
    where = node or socket.gethostname()
    if not config.trust_weights:
        for path, weights in files:
            source = verify_file(path, weights)
            if weights.pypi is not None and source != (config.sr_weights_source or OFFICIAL):
                raise WeightsError(
                    f"node {where} has {path} {_from(source)}, but the job was submitted with {_from(config.sr_weights_source or OFFICIAL)}: "
                    "their pictures differ; fetch the same weights on every node (`farm models fetch --source ...`)"
                )
    if factories.enhancer is not None:
        return
    own: list[tuple[str | None, str | None]] = [(config.sr_weights, config.sr_weights_sha256)]
    if config.face:
        own.append((config.face_weights, config.face_weights_sha256))
    for own_path, recorded in own:
        if own_path is None or recorded is None:
            continue
        if not os.path.isfile(own_path):
            raise MissingWeights(f"{own_path} not found on node {where}; the job needs that weights file on every node")
        found = file_sha256(own_path)
        if found != recorded:
            raise WeightsError(
                f"node {where} has another file at {own_path} (sha256 {found}, the job's is {recorded}); "
                "copy the submitted file to that path on every node, or put it on shared storage"
            )


def _from(source: str) -> str:
    return "the official release file" if source == OFFICIAL else f"converted from {source.removeprefix('pypi:')}"


def face_weights_path(config: ModelConfig) -> tuple[str, WeightsFile | None]:
    if config.face_model not in FACE_MODELS:
        raise UnknownModel(f"unknown face model {config.face_model!r}; known: {', '.join(FACE_MODELS)}")
    if config.face_weights:
        if not os.path.isfile(config.face_weights):
            raise MissingWeights(f"face weights file {config.face_weights} not found")
        return config.face_weights, None
    entry = FACE_MODELS[config.face_model]
    return registry_path(config.weights_dir, entry.weights, f"face model {config.face_model}"), entry.weights


# ----------------------------------------------------------------------------------------------
# Verifying


OFFICIAL = "official"


def source_of(path: str, weights: WeightsFile, digest: str | None = None) -> str | None:
    """What the registry file at ``path`` is: ``"official"`` (the release file), the label of the
    registry's exact conversion from a PyPI package (its manifest beside it agrees with the file
    and the registry), or None for anything else. ``digest``: the file's sha256 if known."""
    actual = file_sha256(path) if digest is None else digest
    if actual == weights.sha256:
        return OFFICIAL
    return None if weights.pypi is None else pypi.conversion(path, weights.pypi, actual)


def verify_file(path: str, weights: WeightsFile) -> str:
    """Refuse a registry file whose content is neither the official release's nor the registry's
    conversion of it (hashed once per node); returns which of the two it is (:func:`source_of`).

    Raises:
        WeightsError: naming the file, both hashes (abridged) and the fixes.
    """
    actual = file_sha256(path)
    source = source_of(path, weights, actual)
    if source is None:
        raise WeightsError(
            f"{path} is not the official {weights.file} (sha256 {actual[:12]}…, expected {weights.sha256[:12]}…); "
            "re-fetch it with `farm models fetch --force`, or pass --trust-weights if you changed it on purpose"
        )
    return source


def sr_weights_source(config: ModelConfig) -> str | None:
    """For the job's record: the label of a registry model's weights converted from PyPI, None
    for the official file (or a user's own file, or one that is not there: checked elsewhere)."""
    if config.sr_weights or config.model not in SR_MODELS or config.weights_dir is None:
        return None
    weights = SR_MODELS[config.model].weights
    path = os.path.join(config.weights_dir, weights.file)
    if weights.pypi is None or not os.path.isfile(path):
        return None
    source = source_of(path, weights)
    return None if source in (None, OFFICIAL) else source


def _tensors_agree(path: str, weights: WeightsFile, source: str) -> str | None:
    """``source`` when the converted file's tensors still have the registry's digest, else None."""
    from farm.enhance.arch import tensors_sha256

    try:
        digest = tensors_sha256(load_state_dict(path))
    except WeightsError:
        return None
    return source if weights.pypi is not None and digest == weights.pypi.tensors_sha256 else None


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
            and a file not hashed here yet is ``present``); a file converted from PyPI has its
            tensors' digest checked too.
    """
    root = weights_path(weights_dir)
    out = []
    for name, weights in select(names, registry).items():
        path = os.path.join(root, weights.file)
        if not os.path.isfile(path):
            out.append(FileState(name, weights.file, path, weights.sha256, None, "missing"))
            continue
        size = os.path.getsize(path)
        actual = fresh_sha256(path) if hash_files else cached_sha256(path)
        source = None if actual is None else source_of(path, weights, actual)
        if source not in (None, OFFICIAL) and hash_files:
            source = _tensors_agree(path, weights, source)
        state: State = "present" if actual is None else ("verified" if source is not None else "mismatch")
        out.append(FileState(name, weights.file, path, weights.sha256, size, state, actual, source))
    return out
