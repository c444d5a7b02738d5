"""Display geometry: anamorphic sources (a 16:9 DVD is 720x480 pixels of 32:27) come out at the
aspect a player shows them at, with --target, --scale (SAR tag kept) and --square-pixels.

The pipeline runs in process (open_job, one plain EnhanceWorker, the mux task), without Ray."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest

from farm.actors.mux_task import assemble
from farm.actors.worker import EnhanceWorker
from farm.config import JobConfig, ModelConfig, OutputConfig, job_id
from farm.job import open_job
from farm.media import SourceInfo
from farm.plan import plan_geometry
from farm.testing.fakes import fake_output
from farm.video.probe import probe
from tests.helpers import decode_all

SIXTEEN_NINE = Fraction(16, 9)


def make_anamorphic(path: str, size=(72, 48), sar=Fraction(32, 27), frames: int = 3) -> str:
    """A 16:9 DVD in miniature: H.264 whose pixels are 32:27 wide, nowhere black."""
    w, h = size
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.sample_aspect_ratio = sar
        for i in range(frames):
            x, y = np.meshgrid(np.arange(w), np.arange(h))
            img = np.stack([60 + (x * 2 + i) % 140, 60 + (y * 3) % 140, np.full_like(x, 120)], axis=2).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def run_job(clip: str, output: str, codec: str = "x264", out_cfg: dict | None = None, **model) -> SourceInfo:
    """The whole job in process: open_job, one shard on a plain worker, the mux task."""
    cfg = JobConfig(input=clip, output=output, model=ModelConfig(model="fake:scale=2", face=False, **model),
                    out=OutputConfig(codec=codec, **(out_cfg or {})), jobs_root=output + ".jobs", shard_frames=1000)
    p = open_job(cfg)
    n = p.spec.source.num_frames
    receipt = EnhanceWorker(p.job.jobs_root, p.job.job_id, "w1", "cpu").run_shard(0, 0, n, attempt=1)
    assemble(p.job.jobs_root, p.job.job_id, output, cfg.out, [(receipt.segment, 0, n)])
    return p.spec.source


def displayed_aspect(path: str) -> Fraction:
    with av.open(path) as c:
        s = c.streams.video[0]
        sar = s.sample_aspect_ratio or Fraction(1)
        return sar * s.width / s.height


def ffprobe_aspect(path: str) -> Fraction:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height,sample_aspect_ratio", "-of", "csv=p=0", path],
                         capture_output=True, text=True, check=True).stdout.strip().split(",")
    w, h, sar = int(out[0]), int(out[1]), out[2]
    num, den = (int(v) for v in sar.split(":")) if sar not in ("N/A", "0:1") else (1, 1)
    return Fraction(num, den) * w / h


def test_plan_geometry_of_a_16_9_dvd():
    """A 720x480 DVD at SAR 32:27: 1080p is filled, --scale 2 keeps the tag, square pixels widen."""
    target = plan_geometry(720, 480, 4, None, (1920, 1080), (32, 27))
    assert (target.picture, target.canvas, target.sample_aspect_ratio, target.outscale) == ((1920, 1080), (1920, 1080), (1, 1), 4.0)
    scaled = plan_geometry(720, 480, 4, 2, None, (32, 27))
    assert (scaled.picture, scaled.canvas, scaled.sample_aspect_ratio, scaled.outscale) == ((1440, 960), (1440, 960), (32, 27), 2.0)
    square = plan_geometry(720, 480, 4, 2, None, (32, 27), square_pixels=True)
    assert (square.picture, square.sample_aspect_ratio, square.outscale) == ((1707, 960), (1, 1), 4.0)
    # A 4:3 DVD (SAR 8:9) in a 1080p frame: 1440x1080, pillarboxed as before.
    assert plan_geometry(720, 480, 4, None, (1920, 1080), (8, 9)).picture == (1440, 1080)
    assert plan_geometry(64, 48, 4, None, (1920, 1080)).picture == (1440, 1080)  # square pixels: unchanged


def test_probe_reads_the_sample_aspect_ratio(tmp_path):
    """The SAR of an anamorphic MP4 is recorded; a job.json written before the field still loads."""
    source = probe(make_anamorphic(str(tmp_path / "dvd.mp4")))
    assert source.sample_aspect_ratio == (32, 27)
    old = source.to_json()
    del old["sample_aspect_ratio"], old["colour"]
    assert SourceInfo.from_json(old).sample_aspect_ratio == (1, 1)
    assert SourceInfo.from_json(source.to_json()) == source


def test_target_fills_the_frame_with_no_bars(tmp_path):
    """A 16:9 DVD with --target 160x90 (16:9): the picture fills the frame, no black columns or
    rows, square pixels; every frame is the model's output resized to the display aspect."""
    clip = make_anamorphic(str(tmp_path / "dvd.mp4"))
    out = str(tmp_path / "out.mkv")
    run_job(clip, out, codec="ffv1", target=(160, 90))
    _, src = decode_all(clip)
    _, got = decode_all(out)
    geometry = plan_geometry(72, 48, 2, None, (160, 90), (32, 27))
    assert len(got) == len(src) == 3
    for frame, out_frame in zip(src, got):
        assert out_frame.shape == (90, 160, 3)
        assert (out_frame.max(axis=(0, 2)) >= 60).all() and (out_frame.max(axis=(1, 2)) >= 60).all()  # no bars
        assert np.array_equal(out_frame, fake_output(frame, 2, geometry))
    assert displayed_aspect(out) == SIXTEEN_NINE


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_scale_keeps_the_sample_aspect_ratio(tmp_path, ext):
    """--scale 2 on a 16:9 DVD: 144x96 pixels tagged SAR 32:27, which players show at 16:9."""
    clip = make_anamorphic(str(tmp_path / "dvd.mp4"))
    out = str(tmp_path / f"out{ext}")
    run_job(clip, out, scale=2.0)
    with av.open(out) as c:
        s = c.streams.video[0]
        assert (s.width, s.height, s.sample_aspect_ratio) == (144, 96, Fraction(32, 27))
    assert abs(displayed_aspect(out) / SIXTEEN_NINE - 1) < 0.01
    if shutil.which("ffprobe"):
        assert abs(ffprobe_aspect(out) / SIXTEEN_NINE - 1) < 0.01


def test_square_pixels_resamples_to_the_display_aspect(tmp_path):
    """--scale 2 --square-pixels: square pixels, 16:9 within 1% (170x96 after the even crop)."""
    clip = make_anamorphic(str(tmp_path / "dvd.mp4"))
    out = str(tmp_path / "out.mp4")
    run_job(clip, out, scale=2.0, square_pixels=True)
    with av.open(out) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (170, 96)
        assert s.sample_aspect_ratio in (None, Fraction(1))
    assert abs(displayed_aspect(out) / SIXTEEN_NINE - 1) < 0.01
    if shutil.which("ffprobe"):
        assert abs(ffprobe_aspect(out) / SIXTEEN_NINE - 1) < 0.01


def test_square_pixels_is_part_of_the_job_identity():
    """--square-pixels changes output pixels, so it changes the job id; off, old ids are kept."""
    plain = ModelConfig(scale=2.0)
    assert "square_pixels" not in plain.identity()
    out = OutputConfig()
    assert job_id("a.mp4", "x", plain, out) != job_id("a.mp4", "x", ModelConfig(scale=2.0, square_pixels=True), out)


def test_square_pixels_option_reaches_the_model_config():
    """`farm submit dvd.mp4 -o out.mkv --scale 2 --square-pixels` asks for square pixels."""
    from farm.cli.main import main
    from farm.cli.commands import build_config

    params = dict(main.commands["submit"].make_context("submit", ["dvd.mp4", "-o", "out.mkv", "--scale", "2", "--square-pixels"]).params)
    cfg = build_config(params.pop("inputs")[0], params.pop("output"), **params)
    assert (cfg.model.scale, cfg.model.square_pixels) == (2.0, True)
    params = dict(main.commands["submit"].make_context("submit", ["dvd.mp4", "-o", "out.mkv"]).params)
    assert build_config(params.pop("inputs")[0], params.pop("output"), **params).model.square_pixels is False
