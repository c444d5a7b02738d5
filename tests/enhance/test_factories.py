"""The fakes plug in through factory registries that tests fill (farm.enhance.factories); the ``farm``
command has none, and a Ray worker gets its job's factories from the driver."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

from click.testing import CliRunner

from farm.cli.main import main
from farm.config import ModelConfig
from farm.enhance import factories
from farm.enhance.factories import Factories, resolve_factories
from farm.enhance.registry import SR_MODELS
from farm.testing.clips import make_test_clip
from farm.testing.fakes import FakeEnhancerFactory, ScriptedFaceDetector

KNOWN = ", ".join(SR_MODELS)


def test_the_farm_command_has_no_fake_models(tmp_path):
    """A user types `farm submit --model fake` (a name the tests use): the real command does not
    know it, says so in click's usual line, and writes nothing."""
    clip = make_test_clip(str(tmp_path / "clip.mkv"), frames=4, size=(16, 16), audio=False)
    out = str(tmp_path / "out.mkv")
    env = {**os.environ, "FARM_JOBS_ROOT": str(tmp_path / "jobs")}
    result = subprocess.run([sys.executable, "-m", "farm", "submit", clip, "-o", out, "--model", "fake:scale=2", "--quiet"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--model': unknown model 'fake:scale=2'; known: {KNOWN}"
    )
    assert sorted(os.listdir(tmp_path)) == ["clip.mkv"]


def test_a_name_that_only_starts_like_a_fake_is_unknown(tmp_path):
    """`--model fakeish` used to run the fake model silently; even with the fakes installed (as
    in this test process) only the registered name `fake` picks them."""
    result = CliRunner().invoke(main, ["submit", str(tmp_path / "in.mkv"), "-o", str(tmp_path / "o.mkv"), "--model", "fakeish"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == f"Error: Invalid value for '--model': unknown model 'fakeish'; known: {KNOWN}"


def test_factories_resolved_on_the_driver_work_in_a_process_without_registrations(tmp_path):
    """A Ray worker process never calls install_fakes: the factories the driver resolved travel
    pickled in the worker's constructor and build the enhancer and detector there."""
    script = tmp_path / "faces.json"
    script.write_text("{}")
    resolved = resolve_factories(ModelConfig(model="fake:scale=3", face=True, face_detector=f"scripted:{script}"))
    assert isinstance(resolved.enhancer, FakeEnhancerFactory) and resolved.needs_torch is False
    blob = tmp_path / "factories.pickle"
    blob.write_bytes(pickle.dumps(resolved))
    code = (
        "import pickle, sys\n"
        "from farm.enhance import factories\n"
        "from farm.config import ModelConfig\n"
        "from farm.enhance.enhancer import build_enhancer\n"
        "f = pickle.load(open(sys.argv[1], 'rb'))\n"
        "e = build_enhancer(ModelConfig(model='fake:scale=3'), lambda s: None, 'cpu', f)\n"
        "print(factories.registered_enhancers(), type(e).__name__, e.model_scale, type(f.face_detector()).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(blob)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "FakeEnhancer", "3", "ScriptedFaceDetector"]


def test_without_a_registered_detector_a_scripted_one_is_refused(monkeypatch, tmp_path):
    """`--face-detector scripted:PATH` on the real command: refused before any work, naming the
    detectors farm knows."""
    import pytest

    from farm.enhance.weights import check_node_weights
    from farm.errors import UsageError

    monkeypatch.setattr(factories, "_DETECTORS", {})
    config = ModelConfig(sr_weights=str(tmp_path / "sr.pth"), face=True, face_detector="scripted:/tmp/x.json",
                         weights_dir=str(tmp_path), trust_weights=True)
    assert resolve_factories(config) == Factories(None, None)
    with pytest.raises(UsageError) as err:
        check_node_weights(config)
    assert str(err.value) == "unknown face detector 'scripted:/tmp/x.json'; known: retinaface_resnet50"
    monkeypatch.setattr(factories, "_DETECTORS", {"scripted": ScriptedFaceDetector})
    assert resolve_factories(config).face_detector is not None
