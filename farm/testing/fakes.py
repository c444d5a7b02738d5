"""Fakes behind farm's seams: a deterministic nearest-neighbour enhancer, optionally slow, failing or
hanging on chosen frames, and a face detector whose answers are scripted per frame in a file.
:func:`install_fakes` registers them (:mod:`farm.enhance.factories`); the ``farm`` command never does."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from farm.enhance.upscale import place
from farm.plan import Geometry

# ----------------------------------------------------------------------------------------------
# Fake enhancer


@dataclass
class FakeEnhancer:
    """Nearest-neighbour x``scale``; deterministic, so expected output is easy to compute.

    Model-name options (``fake:key=value,...``): ``scale`` (int, default 2); ``ms`` (milliseconds
    spent per frame); ``fail_frames`` (frame numbers joined by ``+`` that always fail);
    ``hang_frames`` with ``hang_once=PATH`` (hang forever on those frames the first time only: the
    marker file PATH records that it happened); ``pid_at`` with ``pid_file=PATH`` (write the
    process id, and in a Ray actor its node id, to PATH on enhancing that frame: a test's cue to
    signal or drain the worker mid-shard)."""

    model_scale: int = 2
    ms: float = 0.0
    fail_frames: frozenset[int] = frozenset()
    hang_frames: frozenset[int] = frozenset()
    hang_once: str | None = None
    pid_at: int | None = None
    pid_file: str | None = None
    geometry: Geometry | None = None
    faces_found: int = 0
    frames_done: int = field(default=0)

    @classmethod
    def parse(cls, name: str) -> FakeEnhancer:
        """Build from a model name such as ``fake:scale=4,ms=2,fail_frames=3+9``."""
        _, _, options = name.partition(":")
        kwargs: dict[str, Any] = {}
        for item in filter(None, options.split(",")):
            key, _, value = item.partition("=")
            if key == "scale":
                kwargs["model_scale"] = int(value)
            elif key == "ms":
                kwargs["ms"] = float(value)
            elif key in ("fail_frames", "hang_frames"):
                kwargs[key] = frozenset(int(v) for v in value.split("+") if v)
            elif key in ("hang_once", "pid_file"):
                kwargs[key] = value
            elif key == "pid_at":
                kwargs["pid_at"] = int(value)
            else:
                raise ValueError(f"unknown fake enhancer option {key!r} in {name!r}")
        return cls(**kwargs)

    def describe(self) -> dict[str, Any]:
        return {"device": "cpu", "device_name": "fake", "precision": "fp32", "model_scale": self.model_scale, "face": False}

    def enhance(self, frame: np.ndarray, number: int) -> np.ndarray:
        from farm.errors import EnhanceError

        if self.ms:
            time.sleep(self.ms / 1000)
        if number in self.fail_frames:
            raise EnhanceError(f"frame {number}: the model failed: injected failure")
        if number in self.hang_frames and self.hang_once and not os.path.exists(self.hang_once):
            with open(self.hang_once, "w") as f:
                f.write(str(os.getpid()))
            while True:
                time.sleep(3600)
        if number == self.pid_at and self.pid_file:
            ray = sys.modules.get("ray")  # in a worker actor: its Ray node too (no import here)
            node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else ""
            with open(self.pid_file + ".tmp", "w") as f:
                f.write(f"{os.getpid()} {node}".strip())
            os.replace(self.pid_file + ".tmp", self.pid_file)
        self.frames_done += 1
        return fake_output(frame, self.model_scale, self.geometry)


class FakeEnhancerFactory:
    """The enhancer factory for model names ``fake`` and ``fake:OPTIONS`` (:class:`FakeEnhancer`);
    registered by :func:`install_fakes`, never by the ``farm`` command."""

    needs_torch = False  # nearest-neighbour in numpy: 64 fake workers fit on one host

    def model_scale(self, config) -> int:
        return FakeEnhancer.parse(config.model).model_scale

    def __call__(self, config, geometry_for, device: str) -> FakeEnhancer:
        fake = FakeEnhancer.parse(config.model)
        fake.geometry = geometry_for(fake.model_scale)
        return fake


def fake_output(frame: np.ndarray, model_scale: int, geometry: Geometry | None) -> np.ndarray:
    """What :class:`FakeEnhancer` returns for ``frame``: the reference for tests."""
    import cv2

    up = np.repeat(np.repeat(frame, model_scale, axis=0), model_scale, axis=1)
    if geometry is None:
        return up
    if (up.shape[1], up.shape[0]) != geometry.picture:
        up = cv2.resize(up, geometry.picture, interpolation=cv2.INTER_NEAREST)
    return place(up, geometry)


# ----------------------------------------------------------------------------------------------
# Scripted face detector


def frame_key(image: np.ndarray) -> str:
    """A short content key for a decoded frame."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:20]


def face_row(x: float, y: float, size: float, score: float = 0.99) -> list[float]:
    """A detector result row (box, score, five landmarks) for an upright face of about ``size``
    pixels whose box starts at ``(x, y)``; landmarks sit where FFHQ's template puts them."""
    template = np.array([[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41], [313.09, 371.15]])
    marks = template / 512.0 * size + np.array([x, y])
    return [x, y, x + size, y + size, score, *marks.reshape(-1).tolist()]


class ScriptedFaceDetector:
    """Answers ``detect_faces`` from a JSON file mapping :func:`frame_key` to result rows; frames
    not in the file have no faces. Used as ``--face-detector scripted:PATH``."""

    def __init__(self, path: str) -> None:
        with open(path) as f:
            self.faces: dict[str, list[list[float]]] = json.load(f)

    def detect_faces(self, image: np.ndarray, conf_threshold: float = 0.8, *args, **kwargs) -> np.ndarray:
        rows = [r for r in self.faces.get(frame_key(image), []) if r[4] > conf_threshold]
        return np.array(rows, dtype=np.float32).reshape(-1, 15)

    # facexlib moves its detector between devices and modes; the script has neither.
    def to(self, *args, **kwargs) -> ScriptedFaceDetector:
        return self

    def eval(self) -> ScriptedFaceDetector:
        return self


def write_face_script(path: str, faces: dict[str, list[list[float]]]) -> str:
    with open(path, "w") as f:
        json.dump(faces, f)
    return path


# ----------------------------------------------------------------------------------------------
# Plugging them in

#: The test entry point: ``python -m farm.testing.cli`` is ``farm`` with the fakes installed.
TEST_ENTRY_MODULE = "farm.testing.cli"


def install_fakes() -> None:
    """Register farm's fakes in this process (the tests' conftest, the test entry point
    ``python -m farm.testing.cli`` and the benchmark scripts call it): model names
    ``fake[:OPTIONS]`` and ``--face-detector scripted:PATH``. A Ray Job submitted from here runs
    the test entry point on the cluster; Ray workers get the factories from the driver."""
    from farm.enhance import factories

    factories.register_enhancer("fake", FakeEnhancerFactory())
    factories.register_face_detector("scripted", ScriptedFaceDetector)
    factories.set_job_module(TEST_ENTRY_MODULE)
