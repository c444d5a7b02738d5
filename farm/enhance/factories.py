"""The seam between farm and its stand-ins: registries of enhancer and face-detector factories that
tests fill (:func:`farm.testing.install_fakes`); the ``farm`` command leaves them empty. Factories
are resolved on the driver and pickled to each worker, so each must be picklable (module-level)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    import numpy as np

    from farm.config import ModelConfig
    from farm.plan import Geometry


class Enhancer(Protocol):
    """Turns one BGR frame into its enhanced output frame.

    An enhancer may also offer ``batch_size(height, width) -> int`` and ``enhance_batch(frames,
    numbers) -> outputs`` (same results as :meth:`enhance` frame by frame); the worker then hands
    it consecutive frames together."""

    model_scale: int

    def enhance(self, frame: np.ndarray, number: int) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


class EnhancerFactory(Protocol):
    """Builds the enhancer for a model name it was registered under."""

    #: False for an enhancer that never touches torch: its worker skips torch's device and thread
    #: setup (so dozens of test workers fit on one host).
    needs_torch: bool

    def model_scale(self, config: ModelConfig) -> int:
        """The native scale of ``config.model``, checked on the driver before any work."""
        ...

    def __call__(self, config: ModelConfig, geometry_for: Callable[[int], Geometry], device: str) -> Enhancer: ...


#: Builds a face detector (facexlib's ``detect_faces`` interface) from the text after ``NAME:``.
DetectorFactory = Callable[[str], Any]

_ENHANCERS: dict[str, EnhancerFactory] = {}
_DETECTORS: dict[str, DetectorFactory] = {}


def _base(name: str) -> str:
    return name.partition(":")[0]


def register_enhancer(name: str, factory: EnhancerFactory) -> None:
    """Make model names ``name`` and ``name:OPTIONS`` build their enhancer with ``factory``."""
    if ":" in name:
        raise ValueError(f"a factory name has no options: {name!r}")
    _ENHANCERS[name] = factory


def register_face_detector(name: str, factory: DetectorFactory) -> None:
    """Make ``--face-detector name:ARGUMENT`` detect faces with ``factory(ARGUMENT)``."""
    if ":" in name:
        raise ValueError(f"a factory name has no options: {name!r}")
    _DETECTORS[name] = factory


def unregister(name: str) -> None:
    """Forget the enhancer and detector factories registered as ``name`` (if any)."""
    _ENHANCERS.pop(name, None)
    _DETECTORS.pop(name, None)


def enhancer_factory(model: str) -> EnhancerFactory | None:
    """The factory registered for model name ``model``, or None (a registry model, or unknown)."""
    return _ENHANCERS.get(_base(model))


def face_detector_factory(detector: str) -> Callable[[], Any] | None:
    """A no-argument builder for ``detector`` (``NAME:ARGUMENT``) when a factory is registered as
    NAME, else None (facexlib's own detector, or unknown)."""
    factory = _DETECTORS.get(_base(detector))
    if factory is None:
        return None
    return functools.partial(factory, detector.partition(":")[2])


def registered_enhancers() -> list[str]:
    return sorted(_ENHANCERS)


@dataclass(frozen=True)
class Factories:
    """The factories one job's workers use, resolved on the driver; None fields mean the real
    model (:class:`farm.enhance.ModelEnhancer`) and facexlib's own detector."""

    enhancer: EnhancerFactory | None = None
    face_detector: Callable[[], Any] | None = None

    @property
    def needs_torch(self) -> bool:
        return self.enhancer is None or getattr(self.enhancer, "needs_torch", True)


def resolve_factories(config: ModelConfig) -> Factories:
    """The factories registered in this process for ``config``'s model and face detector."""
    return Factories(enhancer_factory(config.model), face_detector_factory(config.face_detector) if config.face else None)


_job_module = "farm"


def set_job_module(module: str) -> None:
    """The module a Ray Job's entrypoint runs on the cluster (``python -m MODULE submit ...``):
    ``farm``, or a test entry point that fills these registries first, so that the job's driver
    there resolves the same factories."""
    global _job_module
    _job_module = module


def job_module() -> str:
    return _job_module
