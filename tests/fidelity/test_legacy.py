"""Fidelity on legacy video: every clip of farm's legacy corpus (DVD MPEG-2 with AC3 and DVD
subpictures, DV, interlaced broadcast H.264, full-range MJPEG, HDR10 HEVC, WMV2, FLV) goes
through the whole pipeline with the real model code, and comes out with the source's timing,
the model's exact output for every picture the decoder presents, and every other stream
untouched."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest
from click.testing import CliRunner

from farm.cli.main import main
from farm.testing.legacy import LEGACY_CORPUS, legacy_corpus
from farm.video import color
from farm.video.probe import probe
from tests.helpers import bwdif_pass, decode_all, max_abs_diff, quick_first, reference_upsampler, stream_packets, submit_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Shard sizes that cut every clip mid-GOP (the GOPs are 6 frames) and leave a short last shard
#: (DV is intra-only, 3 frames of 720x576: shards of 2 and 1).
SHARD_FRAMES = {"dv_4_3": 2, "dv_16_9": 2}
#: DV's frames are full PAL size (the format has no other): upscaled x2, not x4, which takes the
#: model and the lossless encode a quarter of the pixels and tests the same path.
SCALE = {"dv_4_3": 2, "dv_16_9": 2}
#: The lossless output's container: Matroska, except where it cannot hold a stream (WMA2: NUT,
#: the container farm itself suggests), and MP4 back into MP4 (Matroska, which stores no negative
#: times, would shift every stream by the AAC priming, as the corpus tests show).
OUTPUT = {"wmv2_asf": ".nut", "anamorphic_h264": ".mp4"}
#: The quick tier's cases: DivX with packed B-frames and AC3 (the decode-built index, a bitstream
#: filter, pictures out of order); widescreen DV and HDR10 keep their aspect and colour tags.
QUICK_MODEL_OUTPUT = ("divx_packed_ac3",)
QUICK_TAGS = ("dv_16_9", "hdr10_hevc")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    return legacy_corpus(str(tmp_path_factory.mktemp("legacy")))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return tmp_path_factory.mktemp("legacy-out")


def presented(path: str) -> tuple[Fraction, list[Fraction]]:
    """The video stream's time base and the times of the frames a sequential decode presents."""
    with av.open(path) as c:
        stream = c.streams.video[0]
        return Fraction(stream.time_base), [f.pts * stream.time_base for f in c.decode(stream)]


def in_resolution(times: list[Fraction], time_base: Fraction) -> list[Fraction]:
    """``times`` rounded to ``time_base`` (half away from zero, as FFmpeg's muxers round)."""
    return [int(abs(t) / time_base + Fraction(1, 2)) * (1 if t >= 0 else -1) * time_base for t in times]


def test_legacy_clips_have_the_properties_they_are_named_for(clips):
    """Each clip is what an archive holds, as a demuxer and decoder see it."""
    from farm.video.probe import probe

    info = {name: probe(path) for name, path in clips.items()}
    with av.open(clips["hdr10_hevc"]) as c:
        hdr = c.streams.video[0].codec_context
        assert (hdr.color_primaries, hdr.color_trc, hdr.colorspace) == (9, 16, 9)  # BT.2020, PQ
    summary = {
        name: (i.format_name, i.codec, i.pix_fmt, i.field_order, [(s.type, s.codec) for s in i.other_streams])
        for name, i in info.items()
    }
    assert summary == {
        "dvd_mpeg2": ("mpeg", "mpeg2video", "yuv420p", "tt", [("audio", "ac3"), ("audio", "ac3"), ("subtitle", "dvdsub")]),
        "dv_4_3": ("dv", "dvvideo", "yuv420p", "bb", []),
        "dv_16_9": ("avi", "dvvideo", "yuv420p", "bb", [("audio", "pcm_s16le")]),
        "interlaced_h264": ("mpegts", "h264", "yuv420p", "tt", [("audio", "mp2")]),
        "mjpeg_full_range": ("avi", "mjpeg", "yuvj420p", "unknown", [("audio", "pcm_s16le")]),
        "hdr10_hevc": ("matroska,webm", "hevc", "yuv420p10le", "unknown", []),
        "wmv2_asf": ("asf", "wmv2", "yuv420p", "unknown", [("audio", "wmav2")]),
        "flv1_mp3": ("flv", "flv", "yuv420p", "unknown", [("audio", "mp3float")]),
        "divx_packed_ac3": ("avi", "mpeg4", "yuv420p", "unknown", [("audio", "ac3")]),
        "xvid_mp3": ("avi", "mpeg4", "yuv420p", "unknown", [("audio", "mp3float")]),
        "avi_dropped_frames": ("avi", "mpeg4", "yuv420p", "unknown", [("audio", "mp3float")]),
        "anamorphic_h264": ("mov,mp4,m4a,3gp,3g2,mj2", "h264", "yuv420p", "progressive", [("audio", "aac")]),
    }
    assert [i.index.method for i in (info["divx_packed_ac3"], info["xvid_mp3"])] == ["decode", "decode"]
    assert info["divx_packed_ac3"].index.bitstream_filter == "mpeg4_unpack_bframes"
    # null chunks where frames were dropped: the frames that are there keep their times, gaps stay
    dropped = info["avi_dropped_frames"].index
    assert len(dropped) == 9 and dropped.pts[-1] - dropped.pts[0] > 8, dropped.pts
    assert info["anamorphic_h264"].sample_aspect_ratio == (32, 27)
    assert (info["dv_4_3"].width, info["dv_4_3"].height, info["dv_4_3"].num_frames) == (720, 576, 3)
    sar = {}
    for name in ("dv_4_3", "dv_16_9"):
        with av.open(clips[name]) as c:
            sar[name] = c.streams.video[0].codec_context.sample_aspect_ratio
    assert sar == {"dv_4_3": Fraction(16, 15), "dv_16_9": Fraction(64, 45)}


@pytest.mark.ray
@pytest.mark.parametrize("name", quick_first(LEGACY_CORPUS, QUICK_MODEL_OUTPUT))
def test_legacy_output_is_the_model_output_at_the_source_times(name, clips, outputs, tiny_x4, tiny_x2, local_ray):
    """Every legacy source, upscaled x4 (DV x2) losslessly with --deinterlace off in shards that
    start mid-GOP: the output's frames are the pictures a sequential decode of the source presents,
    each RealESRGANer's output for that picture, at the source's times (within the output
    container's resolution), and audio and subtitles are the source's, byte for byte."""
    source = clips[name]
    out = str(outputs / f"{name}{OUTPUT.get(name, '.mkv')}")
    scale = SCALE.get(name, 4)
    weights = tiny_x2 if scale == 2 else tiny_x4
    submit_tiny(source, out, weights, "--codec", "ffv1", "--deinterlace", "off", "--shard-frames", str(SHARD_FRAMES.get(name, 5)))

    out_tb, out_times = presented(out)
    _, src_times = presented(source)
    # ffmpeg's rule: the pictures in the decoder's order, at the sorted times (AVI's B-frames)
    assert out_times == in_resolution(sorted(src_times), out_tb), (out_times, src_times)
    fmt = "bgr48le" if name == "hdr10_hevc" else "bgr24"
    _, src_frames = decode_all(source, fmt)
    _, out_frames = decode_all(out, fmt)
    assert len(out_frames) == len(src_frames)
    assert_model_output_and_streams(src_frames, out_frames, weights, out, source, scale)


def assert_model_output_and_streams(pictures, out_frames, weights: str, out: str, source: str, scale: int = 4) -> None:
    """Each output frame is RealESRGANer's output of its picture (±1) with ``weights`` of
    ``scale``, and the output's audio and subtitles are the source's, packet for packet."""
    upsampler = reference_upsampler(weights, scale)
    for i, (frame, got) in enumerate(zip(pictures, out_frames)):
        expected, _ = upsampler.enhance(frame)
        assert max_abs_diff(got, expected) <= 1, f"frame {i}"
    assert stream_packets(out, "audio") == stream_packets(source, "audio")
    assert stream_packets(out, "subtitle") == stream_packets(source, "subtitle")


@pytest.mark.ray
def test_dvd_is_deinterlaced_by_default(clips, outputs, tiny_x4, local_ray):
    """A DVD (interlaced MPEG-2, top field first) with default settings: each output frame is
    RealESRGANer's output of bwdif's frame for that source frame, at the source's times, with
    the AC3 tracks and subpictures untouched."""
    source = clips["dvd_mpeg2"]
    out = str(outputs / "dvd_mpeg2-auto.mkv")
    submit_tiny(source, out, tiny_x4, "--codec", "ffv1", "--shard-frames", "5")
    out_tb, out_times = presented(out)
    assert out_times == in_resolution(presented(source)[1], out_tb)
    _, out_frames = decode_all(out)
    deinterlaced = bwdif_pass(source, "send_frame", "tff")
    assert len(out_frames) == len(deinterlaced) == 12
    assert_model_output_and_streams(deinterlaced, out_frames, tiny_x4, out, source)


def tags(path: str) -> dict:
    with av.open(path) as c:
        ctx = c.streams.video[0].codec_context
        return {"sar": ctx.sample_aspect_ratio, "primaries": ctx.color_primaries, "transfer": ctx.color_trc}


PRIMARIES = {name: code for code, name in color.PRIMARIES.items()}
TRANSFERS = {name: code for code, name in color.TRANSFERS.items()}


#: The tags test writes the default codec (x264), whose bitstream carries the pixel aspect and the
#: colour tags in any container (FFV1 carries neither: in Matroska its aspect would need a stream
#: field PyAV cannot set; see the README's anamorphic row).
TAGS_OUTPUT = {"wmv2_asf": ".nut"}


@pytest.mark.ray
@pytest.mark.parametrize("name", quick_first(LEGACY_CORPUS, QUICK_TAGS))
def test_legacy_output_keeps_display_and_colour_tags(name, clips, outputs, local_ray):
    """A widescreen DV tape or an HDR10 master upscaled uniformly keeps its pixel aspect ratio,
    colour primaries and transfer function, so it plays with the source's shape and colours."""
    source = clips[name]
    out = str(outputs / f"{name}-tags{TAGS_OUTPUT.get(name, '.mkv')}")
    args = ["submit", source, "-o", out, "--model", "fake", "--no-face", "--workers", "1", "--device", "cpu",
            "--quiet", "--deinterlace", "off"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # What a player takes the source for: its tags, or for an untagged one what players assume
    # (BT.601 below 720 lines), which farm writes on the output so it is not re-read as BT.709.
    colour = probe(source).colour
    assert colour is not None
    expected = {"sar": tags(source)["sar"], "primaries": PRIMARIES.get(colour.primaries or ""), "transfer": TRANSFERS.get(colour.transfer or "")}
    if expected["sar"] is not None and expected["sar"] == 1:
        expected["sar"] = None  # square pixels, written or not
    got = tags(out)
    if got["sar"] is not None and got["sar"] == 1:
        got["sar"] = None
    assert got == expected


def test_every_one_frame_shard_of_the_dvd_equals_a_sequential_decode(clips):
    """A DVD's last picture is a keyframe that a seek in its program stream cannot reach: a shard
    holding only that frame (scene-aware planning can cut one there) decodes from further back
    and gives exactly the picture a sequential decode presents, as does every other frame."""
    from farm.video.decode import decode_shard

    source = probe(clips["dvd_mpeg2"])
    _, sequential = decode_all(clips["dvd_mpeg2"])
    assert len(sequential) == source.num_frames == 12
    for frame in range(source.num_frames):
        got = list(decode_shard(source.location, source.video_stream, source.index, frame, frame + 1, colour=source.colour))
        assert [n for n, _ in got] == [frame]
        assert max_abs_diff(got[0][1], sequential[frame]) == 0, f"frame {frame}"
