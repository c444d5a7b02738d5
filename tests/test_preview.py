"""`farm preview`: a few frames through exactly the job's pipeline, on one PNG sheet."""

from __future__ import annotations

import os

import cv2
import pytest
from click.testing import CliRunner

from farm.cli import main
from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.sampling.preview import PANELS, preview
from farm.testing import make_scene_clip
from tests.helpers import decode_all, max_abs_diff, submit_tiny

pytestmark = [pytest.mark.ray]

CUTS = (10, 29)


@pytest.fixture(scope="module")
def scene_clip(tmp_path_factory) -> str:
    return make_scene_clip(str(tmp_path_factory.mktemp("preview") / "scenes.mp4"), CUTS, frames=40, size=(40, 24), gop=8)


def test_sheet_after_panels_are_the_jobs_output_frames(scene_clip, tiny_x4, tmp_path, one_torch_thread):
    """A user previews a clip with --target before a long job: the after-panels on the sheet are the
    frames `farm submit` then writes at those times (lossless output, ±1), the before-panels are the
    source frames scaled to the output, and the picks land on the clip's scene cuts."""
    output = str(tmp_path / "job.mkv")
    submit_tiny(scene_clip, output, tiny_x4, "--codec", "ffv1", "--target", "200x100", "--jobs-root", str(tmp_path / "jobs"))
    _, job_frames = decode_all(output)
    _, source = decode_all(scene_clip)

    sheet_path = str(tmp_path / "sheet.png")
    cfg = JobConfig(input=scene_clip, output=sheet_path, out=OutputConfig(codec="ffv1"),
                    model=ModelConfig(sr_weights=tiny_x4, face=False, target=(200, 100), device="cpu", precision="fp32"))
    result = preview(cfg, sheet_path, count=3)
    sheet = cv2.imread(sheet_path)  # the file, not the array in memory

    # Spread picks are 6, 20, 33; the first two each move to the cut within a second after them.
    assert result.frames == (CUTS[0], CUTS[1], 33)
    assert result.canvas == (200, 100)
    assert [round(t, 3) for t in result.times_s] == [round(f / 24, 3) for f in result.frames]
    for row, number in enumerate(result.frames):
        x, y, w, h = result.sheet.boxes[(row, "after")]
        assert max_abs_diff(sheet[y : y + h, x : x + w], job_frames[number]) <= 1, number
        x, y, w, h = result.sheet.boxes[(row, "nearest")]
        panel = sheet[y : y + h, x : x + w]
        # 40x24 fits 200x100 at x4.1667 (166x100), centred: the nearest-neighbour source, on black.
        expected = cv2.resize(source[number], (166, 100), interpolation=cv2.INTER_NEAREST)
        assert max_abs_diff(panel[:, 17:183], expected) == 0
        assert panel[:, :17].max() == 0 and panel[:, 183:].max() == 0
    assert set(result.sheet.boxes) == {(r, p) for r in range(3) for p in PANELS}


def test_at_times_through_the_cli(scene_clip, tmp_path):
    """A user asks for the frames at 0.5 s and 1.5 s: the sheet shows the frames shown at those
    times, and the command prints its path."""
    sheet_path = str(tmp_path / "at.png")
    result = CliRunner().invoke(main, ["preview", scene_clip, "-o", sheet_path, "--model", "fake:scale=2", "--no-face",
                                       "--device", "cpu", "--at", "0.5,1.5"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{sheet_path}  (2 frames at 0.500, 1.500 s, 80x48, cpu")
    image = cv2.imread(sheet_path)
    # two rows of 48 px panels under 22 px labels, three 80 px panels a row, 4 px gaps
    assert image.shape == (4 + 2 * (22 + 48 + 4), 4 + 3 * (80 + 4), 3)


@pytest.mark.parametrize("case", ["missing", "not a video", "audio only", "missing weights", "bad target"])
def test_bad_input_gets_the_same_line_as_submit(case, tmp_path, tiny_x4):
    """A user previews a file that submit would refuse: preview refuses it with the same one line
    and the same exit status, and writes no sheet."""
    import av
    import numpy as np

    source, weights, extra = str(tmp_path / "in.mp4"), tiny_x4, []
    if case == "not a video":
        with open(source, "w") as f:
            f.write("hello\n" * 100)
    elif case == "audio only":
        source = str(tmp_path / "in.m4a")
        with av.open(source, "w") as out:
            stream = out.add_stream("aac", rate=48000)
            for i in range(10):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 48000, i * 1024
                for p in stream.encode(frame):
                    out.mux(p)
            for p in stream.encode(None):
                out.mux(p)
    elif case in ("missing weights", "bad target"):
        make_scene_clip(source, (), frames=4, size=(16, 16))
        if case == "missing weights":
            weights = str(tmp_path / "nope.pth")
        else:
            extra = ["--target", "12by7"]
    common = [source, "--sr-weights", weights, "--no-face", "--device", "cpu", *extra]
    runner = CliRunner()
    sheet = str(tmp_path / "s.png")
    submitted = runner.invoke(main, ["submit", *common, "-o", str(tmp_path / "out.mkv"), "--quiet", "--jobs-root", str(tmp_path / "j")])
    previewed = runner.invoke(main, ["preview", *common, "-o", sheet])
    assert submitted.exit_code in (1, 2) and submitted.output.startswith("error: ")
    assert (previewed.exit_code, previewed.output) == (submitted.exit_code, submitted.output)
    assert len(previewed.output.strip().splitlines()) == 1
    assert not os.path.exists(sheet)
