"""`farm preview`: a few frames through exactly the job's pipeline, on one PNG sheet."""

from __future__ import annotations

import json
import os

import cv2
import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.config import JobConfig, ModelConfig, OutputConfig
from farm.sampling.preview import PANELS, preview
from farm.testing.clips import make_scene_clip
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


def test_workers_spread_the_frames_and_change_no_pixel(scene_clip, tmp_path, local_ray):
    """`farm preview --workers 2` takes submit's worker options: its 4 frames are rendered by two
    workers (two each, in order), and the sheet is the one a single worker draws, pixel for pixel."""
    model = ["--model", "fake:scale=2", "--no-face", "--device", "cpu", "--frames", "4"]
    one, two = str(tmp_path / "one.png"), str(tmp_path / "two.png")
    runner = CliRunner()
    single = runner.invoke(main, ["preview", scene_clip, "-o", one, *model], catch_exceptions=False)
    spread = runner.invoke(main, ["preview", scene_clip, "-o", two, *model, "--workers", "2", "--gpus-per-worker", "0.5"],
                           catch_exceptions=False)
    assert single.exit_code == 0 and spread.exit_code == 0, single.output + spread.output
    assert " on 2 workers, " in spread.output and " workers" not in single.output
    assert (cv2.imread(one) == cv2.imread(two)).all() and cv2.imread(one).shape == cv2.imread(two).shape


@pytest.mark.parametrize("args, message", [(["--workers", "0"], "--workers"), (["--device", "tpu"], "--device"),
                                           (["--gpus-per-worker", "9"], "--gpus-per-worker")])
def test_bad_worker_options_get_submits_error(scene_clip, tmp_path, args, message):
    """A bad --workers, --device or --gpus-per-worker gets the error line submit gives, a non-zero
    exit, and no sheet."""
    sheet = str(tmp_path / "sheet.png")
    common = [scene_clip, "--model", "fake:scale=2", "--no-face", *args]
    previewed = CliRunner().invoke(main, ["preview", *common, "-o", sheet])
    submitted = CliRunner().invoke(main, ["submit", *common, "-o", str(tmp_path / "out.mkv"), "--jobs-root", str(tmp_path / "j")])
    assert previewed.exit_code == submitted.exit_code == 2
    line = [x for x in previewed.output.splitlines() if x.startswith("Error")]
    assert len(line) == 1 and message in line[0], previewed.output
    assert line == [x for x in submitted.output.splitlines() if x.startswith("Error")]
    assert not os.path.exists(sheet)


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


def test_clip_is_the_jobs_output_over_its_span(tmp_path):
    """A user previews a film with `--at 0.6 --clip 0.5` before the long job: the clip next to the
    sheet holds exactly the frames, pts and audio packets the full `farm submit` writes for that
    half second, and it is a job of its own (the full job's id and chunks are not touched)."""
    import av

    from farm.testing.clips import make_test_clip
    from tests.helpers import stream_packets

    source = make_test_clip(str(tmp_path / "film.mkv"), frames=36, size=(32, 24), gop=12, bframes=2, audio=True)
    model = ["--model", "fake:scale=2", "--no-face", "--device", "cpu", "--codec", "ffv1", "--jobs-root", str(tmp_path / "jobs")]
    runner = CliRunner()
    full_path = str(tmp_path / "full.mkv")
    full = runner.invoke(main, ["submit", source, "-o", full_path, "--quiet", "--json", *model], catch_exceptions=False)
    assert full.exit_code == 0, full.output
    sheet = str(tmp_path / "sheet.png")
    result = runner.invoke(main, ["preview", source, "-o", sheet, "--at", "0.6", "--clip", "0.5", *model], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    clip_path = str(tmp_path / "sheet.mkv")
    lines = result.output.strip().splitlines()
    assert lines[1].startswith(f"{clip_path}  (clip of source frames [14, 26), ")

    full_times, full_frames = decode_all(full_path)
    clip_times, clip_frames = decode_all(clip_path)
    # 0.6 s shows frame 14 (at 14/24 s); 0.5 s on from there ends before frame 26 (at 26/24 s).
    assert clip_times == full_times[14:26]
    assert len(clip_frames) == 12
    for k, frame in enumerate(clip_frames):
        assert max_abs_diff(frame, full_frames[14 + k]) == 0, k

    with av.open(source) as c:
        audio = c.streams.audio[0]
        expected = [bytes(p) for p in c.demux(audio) if p.size and p.pts is not None and 14 / 24 <= p.pts * audio.time_base < 26 / 24]
    assert expected and stream_packets(clip_path, "audio") == [expected]
    jobs = sorted(os.listdir(tmp_path / "jobs"))
    assert len(jobs) == 2 and json.loads(full.output)["job_id"] in jobs


def test_sixel_of_two_pixels():
    """A user on a sixel terminal sees the sheet drawn: a red and a blue pixel become the sixel
    sequence a terminal draws as those two colours side by side."""
    import numpy as np

    from farm.cli.sixel import to_sixel

    image = np.array([[[0, 0, 255], [255, 0, 0]]], np.uint8)  # BGR: red, blue
    assert to_sixel(image) == '\x1bPq"1;1;2;1#5;2;0;0;100#180;2;100;0;0#5?@$#180@?-\x1b\\\n'


@pytest.mark.parametrize("env, shown", [({"FARM_SIXEL": "1"}, True), ({"TERM": "xterm-256color"}, False)])
def test_show_draws_the_sheet_only_where_the_terminal_can(scene_clip, tmp_path, monkeypatch, env, shown):
    """A user passes --show: on a terminal that says it draws sixel the sheet follows the path
    line as a sixel image; elsewhere (here: not a sixel terminal, and not a tty) one line says where
    to open it instead."""
    for name in ("TERM", "TERM_PROGRAM", "FARM_SIXEL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sheet_path = str(tmp_path / "show.png")
    result = CliRunner().invoke(main, ["preview", scene_clip, "-o", sheet_path, "--model", "fake:scale=2", "--no-face",
                                       "--device", "cpu", "--frames", "1", "--show"])
    assert result.exit_code == 0, result.output
    first, rest = result.output.split("\n", 1)
    assert first.startswith(f"{sheet_path}  (1 frames at ")
    if shown:
        assert rest.startswith('\x1bPq"1;1;256;78#') and rest.endswith("\x1b\\\n")
    else:
        assert rest == f"(this terminal does not say it shows sixel images; open {sheet_path})\n"


def test_a_clips_job_id_is_its_own_and_a_whole_jobs_is_unchanged():
    """A user runs `--clip` and later the full job: the clip is a job of its own (its id names
    the range), while the whole input's job keeps the id it had before frame ranges existed, so
    jobs started by an older farm resume."""
    import hashlib

    from farm.config import job_id

    model, out = ModelConfig(face=False), OutputConfig(codec="ffv1")
    blob = json.dumps({"input": "fp", "model": model.identity(), "out": out.identity()}, sort_keys=True)
    whole = job_id("/v/film.mkv", "fp", model, out)
    assert whole == "film-" + hashlib.sha256(blob.encode()).hexdigest()[:12]
    clip = job_id("/v/film.mkv", "fp", model, out, (14, 26))
    assert clip.startswith("film-") and len({whole, clip, job_id("/v/film.mkv", "fp", model, out, (14, 27))}) == 3


def test_resuming_a_clips_job_resumes_the_clip(tmp_path):
    """A user resumes a clip's job by its id (`farm resume ID`): it continues as the clip, the same
    frames and the same job, not as the whole video."""
    from farm.identity import identify
    from farm.job import open_job, resume_config
    from farm.testing.clips import make_test_clip

    source = make_test_clip(str(tmp_path / "film.mkv"), frames=12, size=(16, 16), audio=False)
    cfg = JobConfig(input=source, output=str(tmp_path / "clip.mkv"), out=OutputConfig(codec="ffv1"), jobs_root=str(tmp_path / "jobs"),
                    model=ModelConfig(model="fake:scale=2", face=False, device="cpu"), frames=(3, 7))
    prepared = open_job(cfg)
    prepared.owner.release()
    assert prepared.spec.source.span == (3, 7) and len(prepared.spec.source.index) == 4
    again = resume_config(str(tmp_path / "jobs"), prepared.job.job_id)
    assert again.frames == (3, 7)
    assert identify(again) == prepared.job.job_id != identify(JobConfig(input=source, output=cfg.output, model=cfg.model, out=cfg.out))
