"""Legacy clips: interlaced captures (woven fields, field order flags) and the legacy corpus (DVD,
DV, broadcast, old web and desktop formats)."""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Any, Sequence, cast

import numpy as np

from farm.testing.clips import pattern_frame
from farm.testing.mpeg4 import make_mpeg4_avi

# ----------------------------------------------------------------------------------------------
# Interlaced clips and the legacy corpus (DVD, DV, broadcast, old web and desktop formats)


def field_pattern(t: float, width: int, height: int) -> np.ndarray:
    """An RGB picture at field time ``t`` (in fields): broad vertical stripes that move 6 pixels
    per field over gentle horizontal waves, so two fields of one frame differ wherever they meet
    (woven: comb measure about 2.6; one picture: about 0.5; bwdif's frames of it: about 0.66)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    stripes = 100 * np.sin(2 * np.pi * (x - 6 * t) / 32)
    waves = 20 * np.sin(2 * np.pi * y / 16)
    return np.clip(np.stack([128 + stripes, 128 + waves, 128 - stripes / 2 + waves / 2], axis=-1), 0, 255).astype(np.uint8)


def woven_frame(number: int, width: int, height: int, top_first: bool = True) -> np.ndarray:
    """Frame ``number`` of an interlaced camera: its two fields are pictures taken a field apart
    (the first in time on the even lines for top field first, on the odd lines otherwise)."""
    first, second = field_pattern(2 * number, width, height), field_pattern(2 * number + 1, width, height)
    frame = first.copy()
    if top_first:
        frame[1::2] = second[1::2]
    else:
        frame[0::2] = second[0::2]
    return frame


def comb_measure(picture: np.ndarray) -> float:
    """Mean absolute difference of adjacent lines over that of lines two apart (the same field):
    about 0.5 for smooth progressive pictures, well above 1 for a woven pair of moving fields."""
    p = picture.astype(np.float64)
    adjacent = np.abs(p[1:] - p[:-1]).mean()
    same_field = np.abs(p[2:] - p[:-2]).mean()
    return float(adjacent / same_field) if same_field else 0.0


def _mark_fields(frames: list, field_order: str) -> list:
    """The frames flagged interlaced with ``field_order`` (``tff`` or ``bff``), as a capture card
    flags them (PyAV cannot set the flags; FFmpeg's setfield filter does)."""
    from farm.video.filters import FilterChain

    chain = FilterChain.like(frames[0], [("setfield", field_order)], time_base=frames[0].time_base)
    out = []
    for frame in frames:
        out += chain.push(frame)
    return out + chain.flush()


def make_interlaced_clip(path: str, *, top_first: bool = True, **kwargs: Any) -> str:
    """An interlaced video with real combing (see :func:`woven_frame`): :func:`make_legacy_clip`
    with its frames flagged and the encoder told the field order."""
    return make_legacy_clip(path, interlaced="tff" if top_first else "bff", **kwargs)


def make_legacy_clip(
    path: str,
    *,
    frames: int = 12,
    size: tuple[int, int] = (64, 48),
    fps: int | Fraction = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    interlaced: str | None = None,
    format: str | None = None,
    options: dict[str, str] | None = None,
    sample_aspect_ratio: Fraction | None = None,
    color: dict[str, int] | None = None,
    audio: Sequence[dict] = (),
    dvd_subtitles: bool = False,
    drop_frames: Sequence[int] = (),
) -> str:
    """A small video in an old or broadcast format.

    Args:
        interlaced: ``tff`` or ``bff``: woven fields (:func:`woven_frame`), flagged so, and the
            encoder told (``+ildct+ilme``, x264 ``tff``/``bff``); None: progressive
            (:func:`pattern_frame`).
        sample_aspect_ratio: written in the codec (DV's 4:3 and 16:9 flags come from it).
        color: codec context colour fields (``color_range``, ``color_primaries``, ...).
        audio: one dict per track: ``codec``, and optionally ``rate``, ``layout``, ``bit_rate``.
        dvd_subtitles: a DVD subpicture track with two tiny bitmaps (written packet by packet:
            FFmpeg's dvdsub encoder takes bitmaps PyAV cannot build).
        drop_frames: frame times left out, as a capture card drops frames; the AVI muxer writes
            an empty (null) chunk in each gap, as capture software did.
    """
    import av

    width, height = size
    rate = Fraction(fps)
    tb = 1 / rate
    out = av.open(path, "w", format=format)
    try:
        video = cast("av.video.stream.VideoStream", out.add_stream(codec, rate=rate))
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = tb
        if sample_aspect_ratio is not None:
            video.codec_context.sample_aspect_ratio = sample_aspect_ratio
        for key, value in (color or {}).items():
            setattr(video.codec_context, key, value)
        opts: dict[str, object] = {}
        if interlaced:
            video.codec_context.field_order = 2 if interlaced == "tff" else 3
            opts["flags"] = "+ildct+ilme"
            if codec == "libx264":
                opts.update({"x264-params": f"{interlaced}=1", "crf": "8"})
        if codec == "libx264":
            opts = {"preset": "veryfast", "crf": "18", "bf": "2", "g": "6", **opts}
        opts.update(options or {})
        video.options = opts
        tracks = []
        for t, spec in enumerate(audio):
            stream = cast("av.audio.stream.AudioStream", out.add_stream(spec["codec"], rate=spec.get("rate", 48000)))
            stream.layout = spec.get("layout", "stereo")
            if "bit_rate" in spec:
                stream.bit_rate = spec["bit_rate"]
            stream.metadata["language"] = ["eng", "fra", "deu"][t % 3]
            tracks.append(stream)
        subs = out.add_stream("dvd_subtitle") if dvd_subtitles else None
        out.start_encoding()
        pictures = []
        for i in range(frames):
            if i in drop_frames:
                continue
            rgb = woven_frame(i, width, height, interlaced == "tff") if interlaced else pattern_frame(i, width, height)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts, frame.time_base = i, tb
            pictures.append(frame)
        if interlaced:
            pictures = _mark_fields(pictures, interlaced)
        for frame in pictures:
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for t, stream in enumerate(tracks):
            _write_audio(out, stream, float(frames * tb), 330.0 * (t + 1))
        if subs is not None:
            for n, start_s in enumerate((0.04, float(frames * tb) / 2)):
                packet = av.Packet(_dvd_subpicture(n + 1))
                packet.stream = subs
                packet.time_base = Fraction(1, 90000)
                packet.pts = packet.dts = int(start_s * 90000)
                packet.duration = 9000
                out.mux(packet)
    finally:
        out.close()
    return path


def _dvd_subpicture(colour: int) -> bytes:
    """A DVD subpicture unit: a 2x2 bitmap of palette entry ``colour`` at the top left, shown at
    once (RLE lines "colour to the end of the line", one per field, then one control sequence)."""
    rle_top, rle_bottom = bytes([0x00, colour & 3]), bytes([0x00, colour & 3])
    control_at = 4 + len(rle_top) + len(rle_bottom)
    control = (
        (0).to_bytes(2, "big") + control_at.to_bytes(2, "big")  # no delay; the last sequence
        + bytes([0x03, 0x32, 0x10])  # palette
        + bytes([0x04, 0xFF, 0xF0])  # contrast (alpha)
        + bytes([0x05, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01])  # x 0..1, y 0..1
        + bytes([0x06]) + (4).to_bytes(2, "big") + (4 + len(rle_top)).to_bytes(2, "big")
        + bytes([0x01, 0xFF])  # start display; end
    )
    body = rle_top + rle_bottom + control
    return (4 + len(body)).to_bytes(2, "big") + control_at.to_bytes(2, "big") + body


def _write_audio(out, stream, duration_s: float, hz: float = 440.0) -> None:
    """A tone in the stream's own sample format and layout (legacy encoders take few formats)."""
    import av

    ctx = stream.codec_context
    rate = ctx.sample_rate
    fmt = ctx.format.name
    channels = ctx.layout.nb_channels
    frame_size = ctx.frame_size or 1024
    total, done = int(rate * duration_s), 0
    while done < total:
        n = min(frame_size, total - done) if ctx.frame_size == 0 else frame_size
        wave = 0.2 * np.sin(2 * np.pi * hz * np.arange(done, done + n) / rate)
        if fmt.startswith("s16"):
            data = (wave * 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            data = (wave * 2**31).astype(np.int32)
        else:
            data = wave.astype(np.float32)
        planar = fmt.endswith("p")
        samples = np.tile(data, (channels, 1)) if planar else np.repeat(data, channels)[None]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format=fmt, layout=ctx.layout.name)
        frame.sample_rate, frame.pts, frame.time_base = rate, done, Fraction(1, rate)
        out.mux(stream.encode(frame))
        done += n
    out.mux(stream.encode(None))


#: The clips of :func:`legacy_corpus`: old, broadcast and disc formats that farm meets in archives.
LEGACY_CORPUS = (
    "dvd_mpeg2",  # DVD: interlaced MPEG-2 (TFF) in an MPEG program stream, two AC3 tracks, DVD subpictures
    "dv_4_3",  # DV camcorder tape: 720x576 bottom field first, 4:3, raw DV stream
    "dv_16_9",  # DV widescreen in AVI with PCM audio
    "interlaced_h264",  # 25i broadcast: H.264 MBAFF top field first in MPEG-TS with MP2 audio
    "mjpeg_full_range",  # camera MJPEG (yuvj420p, full range) in AVI with PCM audio
    "hdr10_hevc",  # 10-bit HEVC with HDR10 tags (BT.2020, PQ, mastering display, MaxCLL) in MKV
    "wmv2_asf",  # Windows Media: WMV2 and WMA2 in ASF at 29.97 fps
    "flv1_mp3",  # old web video: Sorenson Spark (FLV1) and MP3 in FLV
    "divx_packed_ac3",  # DivX 5: MPEG-4 ASP with packed B-frames and AC3 in AVI
    "xvid_mp3",  # Xvid: MPEG-4 ASP with (unpacked) B-frames and MP3 in AVI
    "avi_dropped_frames",  # a capture with dropped frames: MPEG-4 in AVI with null chunks, MP3
    "anamorphic_h264",  # a 16:9 DVD re-encoded to H.264 in MP4, anamorphic (SAR 32:27), AAC
)

_HDR10 = (
    "log-level=error:keyint=6:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:"
    "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):max-cll=1000,400"
)


def legacy_corpus(directory: str, names: Sequence[str] = LEGACY_CORPUS) -> dict[str, str]:
    """Write the legacy corpus (made with PyAV's encoders; the DV clips are 3 frames, about
    0.45 MB each: DV has one frame size per TV system, and the model's cost grows with it) into ``directory``.

    Returns:
        ``{name: path}`` for ``names`` (all of :data:`LEGACY_CORPUS` by default), in that order.
    """
    os.makedirs(directory, exist_ok=True)
    d = lambda name: os.path.join(directory, name)  # noqa: E731
    ntsc = Fraction(30000, 1001)
    makers: dict[str, Any] = {
        "dvd_mpeg2": lambda: make_legacy_clip(
            d("dvd_mpeg2.vob"), codec="mpeg2video", interlaced="tff", format="vob", options={"b": "2M", "g": "6", "bf": "2"},
            audio=[{"codec": "ac3"}, {"codec": "ac3"}], dvd_subtitles=True,
        ),
        "dv_4_3": lambda: make_legacy_clip(
            d("dv_4_3.dv"), codec="dvvideo", size=(720, 576), frames=3, interlaced="bff", sample_aspect_ratio=Fraction(16, 15), format="dv"
        ),
        "dv_16_9": lambda: make_legacy_clip(
            d("dv_16_9.avi"), codec="dvvideo", size=(720, 576), frames=3, interlaced="bff", sample_aspect_ratio=Fraction(64, 45),
            audio=[{"codec": "pcm_s16le"}],
        ),
        "interlaced_h264": lambda: make_legacy_clip(d("interlaced_h264.ts"), size=(48, 32), interlaced="tff", audio=[{"codec": "mp2"}]),
        "mjpeg_full_range": lambda: make_legacy_clip(
            d("mjpeg_full_range.avi"), codec="mjpeg", pix_fmt="yuvj420p", fps=15, options={"q:v": "3"},
            audio=[{"codec": "pcm_s16le", "layout": "mono"}],
        ),
        "hdr10_hevc": lambda: make_legacy_clip(d("hdr10_hevc.mkv"), codec="libx265", pix_fmt="yuv420p10le", fps=24, options={"x265-params": _HDR10}),
        "wmv2_asf": lambda: make_legacy_clip(
            d("wmv2_asf.wmv"), codec="wmv2", fps=ntsc, options={"g": "6"}, audio=[{"codec": "wmav2", "rate": 44100, "bit_rate": 64000}]
        ),
        "flv1_mp3": lambda: make_legacy_clip(d("flv1_mp3.flv"), codec="flv", fps=ntsc, options={"g": "6"}, audio=[{"codec": "libmp3lame", "rate": 44100}]),
        # 64x48: smaller B-frames can be 19 bytes, which mpeg4_unpack_bframes takes for placeholders
        "divx_packed_ac3": lambda: make_mpeg4_avi(d("divx_packed_ac3.avi"), size=(64, 48), bframes=2, gop=6, packed=True, audio="ac3"),
        "xvid_mp3": lambda: make_mpeg4_avi(d("xvid_mp3.avi"), size=(64, 48), bframes=1, gop=6, audio="libmp3lame"),
        "avi_dropped_frames": lambda: make_legacy_clip(
            d("avi_dropped_frames.avi"), codec="mpeg4", options={"g": "6", "qscale": "4"}, drop_frames=(3, 7, 8),
            audio=[{"codec": "libmp3lame", "rate": 44100}],
        ),
        "anamorphic_h264": lambda: make_legacy_clip(
            d("anamorphic_h264.mp4"), size=(72, 48), sample_aspect_ratio=Fraction(32, 27), audio=[{"codec": "aac"}]
        ),
    }
    unknown = set(names) - set(makers)
    if unknown:
        raise ValueError(f"unknown legacy clips {sorted(unknown)}; known: {', '.join(LEGACY_CORPUS)}")
    return {name: makers[name]() for name in names}
