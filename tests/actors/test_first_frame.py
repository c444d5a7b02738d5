"""The first-frame check: a job whose model outputs a constant stops at its first shard, naming
what to check, instead of writing hours of grey frames."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from farm.actors.first_frame import FirstFrameCheck, verdict
from farm.cli.main import main
from farm.errors import BadOutput
from farm.plan import plan_geometry
from farm.testing.clips import make_test_clip, pattern_frame


def test_verdicts():
    """A broken model's flat or black output is caught; a black intro (flat source) is not judged;
    the black bars of --target are not the picture."""
    src = pattern_frame(3, 40, 24)
    geometry = plan_geometry(40, 24, 4, None, (200, 100))
    canvas = np.zeros((100, 200, 3), np.uint8)
    assert verdict(src, canvas, geometry) == "uniform"  # grey or black picture inside black bars
    canvas[:, 17:183] = 1
    assert verdict(src, canvas, geometry) == "uniform"
    canvas[0, 20] = 3
    assert verdict(src, canvas, geometry) == "black"
    canvas[:, 17:183] = np.repeat(np.repeat(src, 5, 0), 5, 1)[:100, :166]
    assert verdict(src, canvas, geometry) is None
    assert verdict(np.zeros_like(src), np.zeros((96, 160, 3), np.uint8), None) == "flat source"
    assert verdict(src, np.full((96, 160, 3), np.nan, np.float32), None) == "NaN"
    check = FirstFrameCheck(None, "w.pth")
    check.see([np.zeros_like(src)], [np.zeros((96, 160, 3), np.uint8)], [0])  # black intro: moves on
    assert not check.done
    with pytest.raises(BadOutput, match=r"^first-frame check: output frame 1 is uniform \(every pixel \[7, 7, 7\]\)"):
        check.see([src], [np.full((96, 160, 3), 7, np.uint8)], [1])


@pytest.mark.ray
def test_constant_weights_stop_the_job_at_its_first_shard(tmp_path, tiny_x4):
    """Weights damaged so that the network outputs one grey value (last conv zeroed): the job
    fails in its first shard with the reason named, and no other shard is ever started."""
    state = torch.load(tiny_x4, weights_only=True)["params_ema"]
    state["conv_last.weight"].zero_()
    state["conv_last.bias"].fill_(0.5)
    weights = str(tmp_path / "constant.pth")
    torch.save({"params_ema": state}, weights)
    clip = make_test_clip(str(tmp_path / "clip.mp4"), frames=12, size=(32, 24), audio=False)
    jobs = str(tmp_path / "jobs")
    result = CliRunner().invoke(main, ["submit", clip, "-o", str(tmp_path / "out.mkv"), "--sr-weights", weights, "--no-face",
                                       "--workers", "1", "--device", "cpu", "--quiet", "--shard-frames", "4", "--jobs-root", jobs])
    assert result.exit_code == 1
    line = result.output.strip()
    assert len(line.splitlines()) == 1
    assert "the error cannot be fixed by a retry" in line
    assert ("first-frame check: output frame 0 is uniform (every pixel [128, 128, 128]) though its source frame is not; "
            f"check the weights ({weights}: re-fetch or verify them), the device and its driver (`farm doctor`)") in line
    logs = [json.load(open(p)) for p in glob.glob(os.path.join(jobs, "*", "logs", "*.json"))]
    assert [(r["shard"], r["attempt"]) for r in logs] == [(0, 1)]
    assert not os.path.exists(tmp_path / "out.mkv")
