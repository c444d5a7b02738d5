"""Colour: BT.601 (525 and 625 lines), BT.709, BT.2020, untagged and full-range sources, 8 and 10
bits, come out with their matrix, primaries, transfer and range tagged, and, decoded by those tags,
equal to the model's output of the source decoded the same way (±2 through x264 at CRF 0, ±1
through FFV1); HDR10 keeps its transfer and mastering metadata. The decode by the tags is done
twice: as swscale does it for a player, and by the standards' own equations (an oracle that shares
no code with farm). The pipeline runs in process (see tests/video/test_display.py)."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest

from farm.media import Colour
from farm.testing.fakes import fake_output
from farm.video import color
from farm.video.color import colour_of
from farm.video.probe import probe
from tests.helpers import max_abs_diff
from tests.video.test_display import run_job

#: 75 % colour bars (BGR): white, yellow, cyan, green, magenta, red, blue, black.
BARS = np.array([[191, 191, 191], [0, 191, 191], [191, 191, 0], [0, 191, 0], [191, 0, 191], [0, 0, 191], [191, 0, 0], [16, 16, 16]], np.uint8)
SWS = {1: "ITU709", 5: "ITU601", 6: "ITU601", 9: "BT2020"}
HDR10_MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"


def make_bars(path: str, codec: str = "libx264", pix_fmt: str = "yuv444p", size=(64, 48), tags=(None, None, None, None),
              frames: int = 3, options: dict | None = None) -> str:
    """Colour bars encoded with matrix/range ``tags[0:2]`` and tagged (matrix, range, primaries,
    transfer) as given; None leaves a tag out, and the bars are then written as a player would
    read them (BT.601 below 720 lines, BT.709 from there, limited range)."""
    w, h = size
    matrix, rng, primaries, transfer = tags
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        ctx = stream.codec_context
        for name, value in zip(("colorspace", "color_range", "color_primaries", "color_trc"), tags):
            if value is not None:
                setattr(ctx, name, value)
        stream.options = options or {}
        high = "10" in pix_fmt
        img = BARS[np.arange(w) * len(BARS) // w][None].repeat(h, 0)
        img = img.astype(np.uint16) * 257 if high else img
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(img, format="bgr48le" if high else "bgr24")
            frame = frame.reformat(format=pix_fmt, dst_colorspace=SWS.get(matrix or (1 if h >= 720 else 6)), dst_color_range=rng or (2 if pix_fmt.startswith("yuvj") else 1))
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def as_player(path: str, fmt: str = "bgr24") -> tuple[tuple[int, int, int, int], list[np.ndarray]]:
    """(matrix, range, primaries, transfer) of the first frame, and every frame converted to BGR by
    those tags the way players do: untagged means BT.601 below 720 lines, BT.709 from there, limited
    range unless the format is full range (yuvj)."""
    frames = []
    with av.open(path) as c:
        for frame in c.decode(c.streams.video[0]):
            if not frames:
                tags = (frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc)
            matrix = frame.colorspace if frame.colorspace in SWS else (1 if frame.height >= 720 else 5)
            rng = frame.color_range or (2 if frame.format.name.startswith("yuvj") else 1)
            frames.append(frame.reformat(format=fmt, src_colorspace=SWS[matrix], src_color_range=rng).to_ndarray())
    return tags, frames


CASES = {
    # name: (codec, pix_fmt, container, size, source tags, expected output tags)
    "bt601-sd": ("libx264", "yuv444p", ".mkv", (64, 48), (6, 1, 6, 6), (6, 1, 6, 6)),
    "bt709-tagged": ("libx264", "yuv444p", ".mp4", (64, 48), (1, 1, 1, 1), (1, 1, 1, 1)),
    "untagged-sd": ("libx264", "yuv444p", ".mkv", (64, 48), (None, None, None, None), (6, 1, 6, 6)),
    # 720 lines, so players take it for BT.709 (and only 16 pixels wide, to stay cheap).
    "untagged-hd": ("libx264", "yuv444p", ".mkv", (16, 720), (None, None, None, None), (1, 1, 1, 1)),
    "mjpeg-full-range": ("mjpeg", "yuvj444p", ".mkv", (64, 48), (5, 2, None, None), (5, 2, 6, 6)),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_colours_come_out_as_a_player_shows_the_source(tmp_path, name, ext):
    """Colour bars from each kind of source, upscaled x2 into 4:4:4 H.264 (CRF 0): the output is
    tagged (matrix, range, primaries, transfer) and looks like the source in a player, ±2."""
    codec, pix_fmt, container, size, tags, expected = CASES[name]
    clip = make_bars(str(tmp_path / f"src{container}"), codec, pix_fmt, size, tags)
    out = str(tmp_path / f"out{ext}")
    source = run_job(clip, out, out_cfg={"crf": 0, "pix_fmt": "yuv444p"})
    assert source.colour is not None and source.colour.assumed == (None in tags)
    src_tags, src = as_player(clip)
    out_tags, got = as_player(out)
    assert out_tags == expected
    with av.open(out) as c:  # the stream (container) carries the tags too, not only the bitstream
        ctx = c.streams.video[0].codec_context
        assert (ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc) == expected
    assert len(got) == len(src) == 3
    for i, (frame, out_frame) in enumerate(zip(src, got)):
        assert max_abs_diff(out_frame, fake_output(frame, 2, None)) <= 2, f"frame {i}"


#: (Kr, Kb) of each matrix code (ITU-R BT.601, BT.709, BT.2020 non-constant luminance).
KR_KB = {1: (0.2126, 0.0722), 5: (0.299, 0.114), 6: (0.299, 0.114), 9: (0.2627, 0.0593)}


def by_the_standard(path: str, high_bit_depth: bool) -> list[np.ndarray]:
    """Every frame of ``path`` as BGR (uint8, or uint16 scaled to 16 bits), decoded from its raw
    planes by its tags with the standards' equations: Y'CbCr of limited range (16-235/240 times
    2^(bits-8)) or full range (0 to 2^bits-1), R' = Y' + 2(1-Kr)Cr', B' = Y' + 2(1-Kb)Cb',
    G' = (Y' - Kr R' - Kb B') / Kg. 4:4:4 and RGB formats only (no chroma upsampling to agree on)."""
    top = 65535 if high_bit_depth else 255
    frames = []
    with av.open(path) as c:
        for frame in c.decode(c.streams.video[0]):
            fmt = frame.format
            if fmt.name in ("bgr0", "bgr24"):
                rgb = frame.to_ndarray(format="bgr24")[..., ::-1] / 255.0
            else:
                bits = fmt.components[0].bits
                dtype = np.dtype(np.uint16 if bits > 8 else np.uint8)
                assert all(p.width == frame.width for p in frame.planes), f"{fmt.name}: 4:4:4 only"
                a, b, c_ = (np.frombuffer(bytes(p), dtype).reshape(p.height, p.line_size // dtype.itemsize)[:, : p.width]
                            .astype(np.float64) for p in frame.planes[:3])
                if fmt.name.startswith("gbr"):  # planar G, B, R
                    rgb = np.stack([c_, a, b], -1) / (2**bits - 1)
                else:
                    kr, kb = KR_KB[frame.colorspace]
                    s = 2 ** (bits - 8)
                    if frame.color_range == 2:  # full (pc, JPEG)
                        y, cb, cr = a / (2**bits - 1), (b - 128 * s) / (2**bits - 1), (c_ - 128 * s) / (2**bits - 1)
                    else:  # limited (tv)
                        y, cb, cr = (a - 16 * s) / (219 * s), (b - 128 * s) / (224 * s), (c_ - 128 * s) / (224 * s)
                    r, blue = y + 2 * (1 - kr) * cr, y + 2 * (1 - kb) * cb
                    rgb = np.stack([r, (y - kr * r - kb * blue) / (1 - kr - kb), blue], -1)
            frames.append(np.clip(np.rint(rgb[..., ::-1] * top), 0, top).astype(np.uint16 if high_bit_depth else np.uint8))
    return frames


SYSTEMS = {
    # name: (size, source tags (matrix, range, primaries, transfer)); every source is tagged, so
    # the tags and not the picture height decide (BT.709 at 48 lines, BT.601 at 720).
    "bt601-525": ((64, 48), (6, 1, 6, 6)),
    "bt601-625": ((64, 48), (5, 1, 5, 6)),
    "bt601-at-720-lines": ((16, 720), (6, 1, 6, 6)),
    "bt709": ((64, 48), (1, 1, 1, 1)),
    "bt2020": ((64, 48), (9, 1, 9, 14)),
    "full-range-jpeg": ((64, 48), (5, 2, None, None)),
}


@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_each_colour_system_decodes_as_the_source_by_the_standard(tmp_path, name, bits):
    """A 4:4:4 source of each colour system and bit depth, upscaled x2 into x264 at CRF 0 (4:4:4,
    same depth) and into FFV1 (RGB): each output, decoded by its own tags with the standard's
    equations, equals the model's output of the source decoded the same way: ±2 code values (8-bit
    units) through x264, ±1 through FFV1."""
    size, tags = SYSTEMS[name]
    if name == "full-range-jpeg" and bits == 8:
        codec, pix_fmt = "mjpeg", "yuvj444p"  # what cameras and phones write
    else:
        codec, pix_fmt = "libx264", "yuv444p" if bits == 8 else "yuv444p10le"
    clip = make_bars(str(tmp_path / "src.mkv"), codec, pix_fmt, size, tags)
    high = bits > 8
    unit = 257 if high else 1
    src = by_the_standard(clip, high)
    assert len(src) == 3
    for codec_out, out_cfg, out, tolerance in [
        ("x264", {"crf": 0, "pix_fmt": "yuv444p10le" if high else "yuv444p"}, str(tmp_path / "out.mp4"), 2),
        ("ffv1", {}, str(tmp_path / "out.mkv"), 1),
    ]:
        run_job(clip, out, codec=codec_out, out_cfg=out_cfg)
        got = by_the_standard(out, high)
        assert len(got) == len(src), codec_out
        for i, (frame, out_frame) in enumerate(zip(src, got)):
            assert max_abs_diff(out_frame, fake_output(frame, 2, None)) <= tolerance * unit, f"{codec_out}, frame {i}"


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_default_4_2_0_output_is_tagged(tmp_path, ext):
    """The default yuv420p x264 output of a BT.601 SD source is tagged BT.601, so a player does
    not take the HD-sized result for BT.709."""
    clip = make_bars(str(tmp_path / "src.mkv"), pix_fmt="yuv420p", tags=(6, 1, 6, 6))
    out = str(tmp_path / f"out{ext}")
    run_job(clip, out)
    assert as_player(out)[0] == (6, 1, 6, 6)
    assert probe(out).colour == Colour("smpte170m", "tv", "smpte170m", "smpte170m")


def test_untagged_matrix_follows_the_picture_height():
    """Players read untagged video as BT.601 below 720 lines and BT.709 from 720 on; 576-line
    video has PAL primaries. farm assumes the same and says it assumed."""
    assert colour_of(av.VideoFrame(16, 480, "yuv420p")) == Colour("smpte170m", "tv", "smpte170m", "smpte170m", assumed=True)
    assert colour_of(av.VideoFrame(16, 576, "yuv420p")) == Colour("smpte170m", "tv", "bt470bg", "smpte170m", assumed=True)
    assert colour_of(av.VideoFrame(16, 720, "yuv420p")) == Colour("bt709", "tv", "bt709", "bt709", assumed=True)
    assert colour_of(av.VideoFrame(16, 480, "yuvj420p")).range == "pc"


def test_hdr10_keeps_its_transfer_and_mastering_metadata(tmp_path, caplog):
    """A 10-bit HDR10 HEVC source (BT.2020, PQ, mastering display and content light levels): x265
    output keeps all of it; x264 output keeps the tags (PyAV cannot write the mastering metadata
    there); a warning says the models were trained on SDR."""
    params = f"log-level=error:hdr10=1:master-display={HDR10_MASTERING}:max-cll=1000,400"
    clip = make_bars(str(tmp_path / "hdr.mkv"), "libx265", "yuv420p10le", tags=(9, 1, 9, 16), options={"x265-params": params})
    source = probe(clip)
    assert source.colour == Colour("bt2020nc", "tv", "bt2020", "smpte2084", mastering=HDR10_MASTERING, light="1000,400")
    color._warned.clear()
    with caplog.at_level(logging.WARNING, logger="farm.video.color"):
        run_job(clip, str(tmp_path / "out.mkv"), codec="x265")
    assert sum("trained on SDR" in r.message for r in caplog.records) == 1
    output = probe(str(tmp_path / "out.mkv"))
    assert output.pix_fmt == "yuv420p10le"
    assert output.colour == source.colour
    out = str(tmp_path / "out.mp4")
    run_job(clip, out, codec="x264", out_cfg={"crf": 0, "pix_fmt": "yuv444p10le"})
    assert as_player(out)[0] == (9, 1, 9, 16)
    assert probe(out).colour == Colour("bt2020nc", "tv", "bt2020", "smpte2084")
    # The PQ signal itself is carried, read with the BT.2020 matrix both ways (±2 in 8-bit terms).
    src, got = as_player(clip, "bgr48le")[1], as_player(out, "bgr48le")[1]
    for i, (frame, out_frame) in enumerate(zip(src, got)):
        assert max_abs_diff(out_frame, fake_output(frame, 2, None)) <= 2 * 257, f"frame {i}"
