"""Interlaced sources (576i broadcast, DV, DVD): by default farm deinterlaces them with bwdif
before the model, so the output is progressive and free of combing; ``--deinterlace double``
keeps every field as a frame at its own time; shards change no frame."""

from __future__ import annotations

import re
import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.media import FrameIndex, output_index
from farm.testing.fakes import fake_output
from farm.testing.legacy import comb_measure, make_interlaced_clip
from tests.helpers import bwdif_pass, decode_all, max_abs_diff, packet_pts

pytestmark = [pytest.mark.ray]

#: The ffmpeg program from another FFmpeg release (Debian 12's 5.1, libavfilter 8) and the one PyAV
#: bundles (libavfilter 11) give the same bwdif frames except at the video's ends: the first output
#: frame (and the last field of a send_field pass) differ on 8 of 48 lines, by up to 31 code values
#: on the test clips. Between equal libavfilter versions every frame must be equal.
EDGE_TOLERANCE = 31
EDGE_LINES = 8

#: Progressive pictures measure about 0.5, bwdif's frames of the test clip about 0.66; the woven
#: test clip about 2.6 (a colleague measured 2.0 on a real 576i broadcast).
PROGRESSIVE_COMB = 0.7


def source_lines(output_frame: np.ndarray) -> np.ndarray:
    """The fake model's x2 nearest-neighbour output taken back to the source's lines (a doubled
    line would halve the comb measure of any picture)."""
    return output_frame[::2, ::2]


@pytest.fixture(scope="module")
def tff_clip(tmp_path_factory) -> str:
    return make_interlaced_clip(str(tmp_path_factory.mktemp("interlaced") / "tff.mkv"), frames=14, size=(64, 48))


def submit(source: str, output: str, *extra: str) -> None:
    args = ["submit", source, "-o", output, "--model", "fake", "--no-face", "--workers", "1", "--device", "cpu",
            "--codec", "ffv1", "--quiet", *extra]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def field_order(path: str) -> int:
    with av.open(path) as c:
        return c.streams.video[0].codec_context.field_order


def ffmpeg_libavfilter(ffmpeg: str) -> tuple[int, int, int]:
    """The libavfilter version the ffmpeg program was built with, from ``ffmpeg -version``."""
    text = subprocess.run([ffmpeg, "-version"], check=True, capture_output=True, text=True).stdout
    found = re.search(r"^libavfilter\s+(\d+)\.\s*(\d+)\.\s*(\d+)", text, re.MULTILINE)
    assert found, text
    major, minor, micro = (int(g) for g in found.groups())
    return major, minor, micro


def ffmpeg_bwdif(ffmpeg: str, source: str, mode: str, parity: str, out: str) -> list[np.ndarray]:
    """The ffmpeg program's ``-vf bwdif=mode=M:parity=P:deint=all`` over the whole video, every
    frame kept (passthrough timing) and written raw in the source's pixel format, as BGR."""
    args = [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", source, "-vf", f"bwdif=mode={mode}:parity={parity}:deint=all",
            "-fps_mode", "passthrough", "-c:v", "rawvideo", "-f", "nut", out]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with av.open(out) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def test_the_bwdif_oracle_is_ffmpegs(tff_clip, tmp_path):
    """The frames the tests expect (:func:`tests.helpers.bwdif_pass`, plain PyAV) are what
    ``ffmpeg -vf bwdif`` makes of the interlaced recording, in both modes and parities: every frame,
    bit for bit, from the same libavfilter; from another release, every frame but the video's
    first and last, and those within :data:`EDGE_TOLERANCE` on :data:`EDGE_LINES` lines at most."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("the ffmpeg program is not installed (CI installs Debian's ffmpeg); it is the second opinion on bwdif_pass")
    same_release = ffmpeg_libavfilter(ffmpeg) == tuple(av.library_versions["libavfilter"])
    for mode, per in (("send_frame", 1), ("send_field", 2)):
        for parity in ("tff", "bff"):
            expected = bwdif_pass(tff_clip, mode, parity)
            got = ffmpeg_bwdif(ffmpeg, tff_clip, mode, parity, str(tmp_path / f"{mode}-{parity}.nut"))
            assert len(got) == len(expected) == 14 * per
            for i, (a, b) in enumerate(zip(got, expected)):
                if same_release or 0 < i < len(got) - 1:
                    assert np.array_equal(a, b), f"{mode} {parity} frame {i}"
                else:
                    lines = np.count_nonzero((a != b).any(axis=(1, 2)))
                    assert max_abs_diff(a, b) <= EDGE_TOLERANCE and lines <= EDGE_LINES, f"{mode} {parity} frame {i}: {lines}"


def test_interlaced_clip_is_combed(tff_clip):
    """The test clip is what a 576i camera records: flagged top field first, combed."""
    from farm.video.probe import probe

    assert probe(tff_clip).field_order == "tt"
    _, frames = decode_all(tff_clip)
    assert min(comb_measure(f) for f in frames) > 2


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p10le"])
def test_field_order_read_from_the_frame_when_the_codec_does_not_say(pix_fmt, tmp_path):
    """A capture whose codec records no field order (DV does not; some MJPEG capture cards'
    AVIs neither) but whose frames are flagged interlaced: the order is read from the first
    frame's own top-field-first flag, for 4:2:0 frames too (which FFmpeg's fieldorder converts to
    4:2:2 and back) and at 10 bits. Both parities, as ffprobe reads the frames' flags."""
    from farm.video.deinterlace import detect_field_order

    got = {}
    for top_first in (True, False):
        clip = make_interlaced_clip(str(tmp_path / f"{top_first}.mkv"), top_first=top_first, pix_fmt=pix_fmt)
        with av.open(clip) as c:
            got[top_first] = detect_field_order(0, next(c.decode(video=0)))
        if shutil.which("ffprobe"):
            flags = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-read_intervals", "%+#1", "-show_entries",
                                    "frame=interlaced_frame,top_field_first", "-of", "csv=p=0", clip], capture_output=True, text=True, check=True)
            assert [line.rstrip(",") for line in flags.stdout.split()] == [f"1,{int(top_first)}"]  # side data adds a comma
    assert got == {True: "tt", False: "bb"}


def test_default_deinterlaces_an_interlaced_source(tff_clip, tmp_path, local_ray):
    """A 576i top-field-first broadcast recording, upscaled with default settings in shards that
    cut it anywhere: one output frame per source frame at the source's times, tagged progressive,
    every frame the model's output of a sequential bwdif pass, and no combing left."""
    out = str(tmp_path / "out.mkv")
    submit(tff_clip, out, "--shard-frames", "4")
    assert packet_pts(out) == packet_pts(tff_clip)
    assert field_order(out) == 1  # progressive
    _, got = decode_all(out)
    expected = [fake_output(f, 2, None) for f in bwdif_pass(tff_clip, "send_frame", "tff")]
    assert len(got) == len(expected) == 14
    for i, (a, b) in enumerate(zip(got, expected)):
        assert np.array_equal(a, b), f"frame {i}"
        assert comb_measure(source_lines(a)) < PROGRESSIVE_COMB, f"frame {i}"


def test_off_keeps_fields_and_their_tag(tff_clip, tmp_path, local_ray):
    """--deinterlace off: the model sees the woven frames as decoded and the output keeps the
    source's field order tag (top field first)."""
    out = str(tmp_path / "off.mkv")
    submit(tff_clip, out, "--shard-frames", "5", "--deinterlace", "off")
    assert field_order(out) == 2  # tt
    _, src = decode_all(tff_clip)
    _, got = decode_all(out)
    assert all(np.array_equal(a, fake_output(b, 2, None)) for a, b in zip(got, src)) and len(got) == len(src)
    assert min(comb_measure(source_lines(a)) for a in got) > 2


def test_double_rate_gives_a_frame_per_field_at_field_times(tff_clip, tmp_path, local_ray):
    """--deinterlace double on 25i: 50 frames a second, each field its own frame, at the frame's
    time and half a frame later (the last one too), every frame bwdif's send_field output."""
    out = str(tmp_path / "double.mkv")
    submit(tff_clip, out, "--shard-frames", "3", "--deinterlace", "double")
    times, got = decode_all(out)
    src_times, _ = decode_all(tff_clip)
    half = Fraction(1, 50)
    assert times == [t + d for t in src_times for d in (0, half)]
    expected = [fake_output(f, 2, None) for f in bwdif_pass(tff_clip, "send_field", "tff")]
    assert len(got) == len(expected) == 28
    for i, (a, b) in enumerate(zip(got, expected)):
        assert np.array_equal(a, b), f"frame {i}"
    assert field_order(out) == 1


@pytest.mark.slow
def test_shard_boundaries_change_no_frame(tff_clip, tmp_path, local_ray):
    """The same interlaced recording in one shard and in shards of 1, 2 and 5 frames: the same
    frames, bit for bit (each shard decodes the neighbours bwdif needs)."""
    whole = str(tmp_path / "whole.mkv")
    submit(tff_clip, whole, "--shard-frames", "100", "--deinterlace", "double")
    _, reference = decode_all(whole)
    for size in (1, 2, 5):
        out = str(tmp_path / f"shards{size}.mkv")
        submit(tff_clip, out, "--shard-frames", str(size), "--deinterlace", "double", "--jobs-root", str(tmp_path / f"jobs{size}"))
        _, got = decode_all(out)
        assert np.array_equal(np.stack(got), np.stack(reference)), f"--shard-frames {size}"


def test_output_index_for_double_rate():
    """Field times: each frame's pts and pts plus half its duration; the last frame lasts as long
    as the one before; a one-frame video's second field is one tick later."""
    index = FrameIndex(Fraction(1, 1000), (0, 40, 80, 140), (0,))
    assert output_index(index, "on") is index
    double = output_index(index, "double")
    assert double.time_base == Fraction(1, 2000)
    assert double.pts == (0, 40, 80, 120, 160, 220, 280, 340)
    assert output_index(FrameIndex(Fraction(1, 25), (7,), (7,)), "double").pts == (14, 15)


def test_progressive_source_keeps_its_job_id():
    """A job made before --deinterlace existed keeps its id with the default (auto)."""
    from farm.config import ModelConfig, OutputConfig, job_id

    before = {k: v for k, v in ModelConfig().identity().items()}
    assert "deinterlace" not in before
    out = OutputConfig()
    assert job_id("a.mp4", "f", ModelConfig(), out) != job_id("a.mp4", "f", ModelConfig(deinterlace="double"), out)


def test_jobs_made_before_field_orders_were_recorded_resume_as_they_were_made(tff_clip):
    """An interlaced job created by an older farm (no field order in its job.json) resumes
    without deinterlacing, as its finished segments were made; a new probe deinterlaces."""
    from farm.config import ModelConfig
    from farm.spec import JobSpec
    from farm.video.probe import probe

    source = probe(tff_clip).to_json()
    spec = {"job_id": "j", "source": source, "model": ModelConfig().to_json(), "shard_frames": 4, "input_fingerprint": "f", "created": 0.0}
    assert (JobSpec.from_json(spec).deinterlace, JobSpec.from_json(spec).output_field_order) == ("on", "progressive")
    old_model = {k: v for k, v in spec["model"].items() if k != "deinterlace"}
    old = {**spec, "model": old_model, "source": {k: v for k, v in source.items() if k != "field_order"}}
    assert (JobSpec.from_json(old).deinterlace, JobSpec.from_json(old).output_field_order) == ("off", "unknown")
    assert JobSpec.from_json({**spec, "model": {**old_model, "deinterlace": "double"}}).frames_per_source_frame == 2


def test_bottom_field_first_source_is_deinterlaced_with_its_parity(tmp_path, local_ray):
    """A DV-style bottom-field-first recording: bwdif takes the bottom field as the first
    (the frames differ from a top-field-first pass), and no combing is left."""
    source = make_interlaced_clip(str(tmp_path / "bff.mkv"), frames=8, size=(64, 48), top_first=False)
    out = str(tmp_path / "bff-out.mkv")
    submit(source, out, "--shard-frames", "3")
    _, got = decode_all(out)
    expected = [fake_output(f, 2, None) for f in bwdif_pass(source, "send_frame", "bff")]
    wrong = [fake_output(f, 2, None) for f in bwdif_pass(source, "send_frame", "tff")]
    assert len(got) == len(expected) == 8
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    assert not any(np.array_equal(a, b) for a, b in zip(got, wrong))
    assert max(comb_measure(source_lines(a)) for a in got) < PROGRESSIVE_COMB


def test_double_rate_x264_output_has_the_field_times(tff_clip, tmp_path, local_ray):
    """--deinterlace double with the default H.264 output in MP4: 28 frames at the 28 field
    times, exactly (MP4 keeps the doubled time base)."""
    out = str(tmp_path / "double.mp4")
    args = ["submit", tff_clip, "-o", out, "--model", "fake", "--no-face", "--workers", "1", "--device", "cpu",
            "--quiet", "--shard-frames", "4", "--deinterlace", "double"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    tb, pts = packet_pts(tff_clip)
    expected = [p * tb + d for p in pts for d in (0, Fraction(1, 50))]
    out_tb, out_pts = packet_pts(out)
    assert [p * out_tb for p in out_pts] == expected
