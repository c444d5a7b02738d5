"""farm: a distributed, frame-exact, resumable video upscaling farm (Real-ESRGAN + GFPGAN on Ray).
The public surface: build a :class:`JobConfig` and call :func:`submit`; everything a job needs to
resume lives in its job directory."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "FarmError",
    "JobConfig",
    "ModelConfig",
    "OutputConfig",
    "__version__",
    "submit",
]


def __getattr__(name: str):
    # Lazy: `import farm` must not start importing Ray, torch or PyAV.
    if name == "submit":
        from farm.driver import submit

        return submit
    if name in ("JobConfig", "ModelConfig", "OutputConfig"):
        from farm import config

        return getattr(config, name)
    if name == "FarmError":
        from farm.errors import FarmError

        return FarmError
    raise AttributeError(name)
